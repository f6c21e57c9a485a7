"""The settings of a fine-tune and of the search as plain records (pydantic only, no model code), so the config
loads without torch. :mod:`skillgraft.train` and :mod:`skillgraft.search` use them (and re-export them under their old
names).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class DriftWatch(BaseModel):
    """Stop a fine-tune whose outputs drift too far from where it started, keeping the best checkpoint within budget.

    Every ``every`` steps the model is probed on up to ``prompts`` old-task prompts (given to :func:`fine_tune` as
    ``probe_prompts``) against the starting model: ``kl`` is the mean KL(start ‖ model) per greedy step, in nats;
    ``number_mass`` / ``answer_mass`` are the *rise* of the probability mass on number tokens / on the new task's
    answer tokens over the start (see :mod:`skillgraft.probe`). After ``patience`` checks in a row over ``budget``,
    training stops. The model returned is the checkpoint with the lowest answer-token loss on the new-task examples
    among the checks within budget (the starting model counts as one, so a run that drifts at once returns the
    start unchanged — and then fails the gate's ``min_gain``, which is the point). Costs: a greedy decoding and one
    forward pass of the probe prompts per check, and one copy of the trainable parameters.
    """

    model_config = ConfigDict(extra="forbid")

    budget: float = Field(gt=0, description="largest allowed drift (nats for kl, probability for the masses)")
    metric: Literal["kl", "number_mass", "answer_mass"] = Field("kl", description="what the budget applies to")
    every: int = Field(10, ge=1, description="check every N optimizer steps (and once at the end)")
    prompts: int = Field(32, ge=1, description="probe prompts used (the first N given)")
    probe_steps: int = Field(4, ge=1, description="greedy steps probed per prompt")
    patience: int = Field(1, ge=1, description="checks over budget in a row before stopping")
    examples: int = Field(64, ge=1, description="new-task examples the checkpoint's loss is measured on")


class TrainConfig(BaseModel):
    """Knobs of the fine-tune; the defaults run on a laptop CPU."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(200, ge=1, description="optimizer steps")
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(256, ge=8, description="longest prompt+answer in tokens; longer examples are refused")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = Field("constant", description="learning-rate decay after warmup")
    grad_clip: float | None = Field(1.0, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool | None = Field(None, description="bf16 autocast; None: on when CUDA supports it")
    log_every: int = Field(10, ge=1, description="keep the loss every N steps")
    progress: bool = True
    drift_watch: DriftWatch | None = Field(None, description="stop early on output drift; None: off")
    processes: int | Literal["auto"] = Field(
        1, description="training processes (DDP through accelerate: one per GPU, gloo on CPU); auto: one per GPU"
    )
    micro_batch_size: int | None = Field(
        None, ge=1, description="examples per forward/backward in each process (gradient accumulation); None: all"
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_steps >= self.steps and self.warmup_steps > 0:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})")
        if isinstance(self.processes, int) and self.processes < 1:
            raise ValueError(f"processes is {self.processes}: give 1 or more, or auto (one per visible GPU)")
        if isinstance(self.processes, int) and self.batch_size % self.processes:
            raise ValueError(
                f"batch_size {self.batch_size} does not split evenly over {self.processes} processes: batch_size is "
                f"the global batch, so make it a multiple of processes"
            )
        return self


class SearchConfig(BaseModel):
    """How the fine-tune step picks its learning rate and strength (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: on for a pretrained base unless train.learning_rate or train.steps is set"
    )
    learning_rates: list[float] = Field([5e-5, 2e-5, 5e-6], min_length=1, description="the ladder, tried in order")
    steps: int = Field(60, ge=1, description="optimizer steps per rung")
    alphas: list[float] = Field([1.0, 0.5, 0.25], min_length=1, description="delta scales tried per rung, in (0, 1]")
    budget_s: float | None = Field(1500, gt=0, description="wall-clock seconds for the whole search; None: no limit")
    selection_fraction: float = Field(0.2, gt=0, lt=1, description="new-task training rows held back to score rungs")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_on_off(cls, v):
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v  # YAML reads on/off as booleans

    @field_validator("learning_rates")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(lr <= 0 for lr in v):
            raise ValueError("learning rates must be > 0")
        return v

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, v: list[float]) -> list[float]:
        if any(not 0 < a <= 1 for a in v):
            raise ValueError("every alpha must be in (0, 1]: 1 is the rung itself, 0.5 half its delta")
        return v
