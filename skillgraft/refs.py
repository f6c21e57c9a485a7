"""Small typed references that travel between steps (and between Prefect tasks): never tensors, never raw dicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class BaseRef(BaseModel):
    """The base model every version of a registered model is a delta on.

    ``source`` is what the user gave (a hub id, a local directory, a ``.gguf`` file, or ``builtin:<name>``);
    ``sha256`` hashes the base weights (see :func:`skillgraft.models.state_dict_sha256`) so a delta is never applied
    to the wrong base. ``snapshot`` is true when the base weights are kept in the store under ``models/<m>/base/``.
    """

    source: str
    sha256: str
    model_type: str
    gguf_file: str | None = None
    revision: str | None = Field(None, description="the hub revision the base was loaded at (hub ids only)")
    snapshot: bool = False
    trust_remote_code: bool = False


class BatchRef(BaseModel):
    """An accepted, immutable batch of task data: ``tasks/<task>/batches/<batch_id>/`` (batch_id = content hash)."""

    task: str
    batch_id: str
    train_rows: int = 0
    eval_rows: int = 0


class VersionRef(BaseModel):
    """One stored version of a model: ``models/<model>/versions/<version>/``."""

    model: str
    version: str

    def __str__(self) -> str:
        return f"{self.model}@{self.version}"


class FileEntry(BaseModel):
    sha256: str
    size: int


class DriftPoint(BaseModel):
    """One check of the drift watch: the probes of the model being trained against its starting point."""

    step: int = Field(description="optimizer steps done when checked (0: the starting model)")
    drift: float = Field(description="the watched value: KL, or the rise of a token mass over the start")
    kl: float = Field(description="mean KL(start ‖ model) per greedy step of the start, nats")
    number_mass: float
    answer_mass: float | None = None
    new_loss: float = Field(description="answer-token loss on the watch's new-task examples (lower: learned more)")
    within_budget: bool


class DriftCurve(BaseModel):
    """The drift watch of one fine-tune: its budget, every check, where it stopped and which checkpoint was kept."""

    metric: Literal["kl", "number_mass", "answer_mass"]
    budget: float
    every: int
    prompts: int
    points: list[DriftPoint] = Field(default_factory=list)
    stopped_at: int | None = Field(None, description="step at which the watch stopped training; None: ran to the end")
    kept_step: int = Field(description="the checkpoint returned: lowest new-task loss among checks within budget")
    reason: str = ""


class TrainingRecord(BaseModel):
    """What the fine-tune did: enough to reproduce it and to review it."""

    steps: int
    learning_rate: float
    batch_size: int
    processes: int = Field(1, description="training processes the global batch was split over (DDP ranks)")
    seed: int
    device: str
    dtype: str
    seconds: float
    trainable_parameters: int
    total_parameters: int
    trained_tensors: list[str] = Field(default_factory=list)
    losses: list[float] = Field(default_factory=list)
    drift: DriftCurve | None = Field(None, description="the drift watch's curve, when one ran")


class Rung(BaseModel):
    """One candidate of the search: a learning rate, how far its delta was applied, and how it did."""

    learning_rate: float
    alpha: float
    steps: int = Field(description="optimizer steps the rung ran (the drift watch may stop it early)")
    learned: float = Field(description="score on the new task's selection slice (not trained on)")
    worst_guard: float | None = Field(None, description="the largest drop of a guard or old task vs the champion")
    checks: dict[str, float] = Field(default_factory=dict, description="each guard / old task: candidate − champion")
    kl: float | None = None
    number_mass_rise: float | None = None
    passed: bool
    why: list[str] = Field(default_factory=list, description="the checks it failed")
    seconds: float = Field(description="training (first α of a rung) plus this evaluation")


class SearchRecord(BaseModel):
    learning_rates: list[float]
    alphas: list[float]
    steps: int
    budget_s: float | None
    selection_rows: int
    rungs: list[Rung] = Field(default_factory=list)
    skipped: list[float] = Field(default_factory=list, description="learning rates not tried: the budget ran out")
    chosen: int | None = Field(None, description="index into rungs of the candidate kept")
    reason: str = ""
    seconds: float = 0.0

    def markdown(self) -> str:
        lines = [
            f"Search: {len(self.rungs)} candidates from {len(self.rungs) and len({r.learning_rate for r in self.rungs})} "
            f"training runs of {self.steps} steps (learning rates {', '.join(f'{lr:g}' for lr in self.learning_rates)}; "
            f"α {', '.join(f'{a:g}' for a in self.alphas)}), {self.seconds:.0f} s"
            + (f" of a {self.budget_s:.0f} s budget" if self.budget_s else "")
            + f"; learned = score on {self.selection_rows} held-back new-task rows.",
            "",
            "| lr | α | steps | learned | worst guard/old Δ | KL | number-mass rise | checks | kept |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for i, r in enumerate(self.rungs):
            worst = f"{r.worst_guard:+.3f}" if r.worst_guard is not None else "–"
            kl = f"{r.kl:.3f}" if r.kl is not None else "–"
            mass = f"{r.number_mass_rise:+.4f}" if r.number_mass_rise is not None else "–"
            checks = "ok" if r.passed else "; ".join(r.why)
            lines.append(f"| {r.learning_rate:g} | {r.alpha:g} | {r.steps} | {r.learned:.3f} | {worst} | {kl} | {mass} "
                         f"| {checks} | {'**kept**' if i == self.chosen else ''} |")  # fmt: skip
        if self.skipped:
            lines.append(f"\nNot tried (budget spent): learning rates {', '.join(f'{lr:g}' for lr in self.skipped)}.")
        lines.append(f"\n{self.reason}")
        return "\n".join(lines)


class AdapterRef(BaseModel):
    """A lora version's PEFT adapter, stored as two model files of the version beside its merged delta (the delta is
    what the version chain loads; the adapter is for serving it as an adapter).

    The adapter changes the weights of ``applies_to`` — the version's parent, or the base for a first version — and
    only those. To use it: load the parent's weights (``skillgraft export <parent> --out DIR``; for the base, its
    hub id, its directory, or the snapshot under ``models/<model>/base/``), then
    ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(DIR), ADAPTER_DIR)`` on the directory that
    ``skillgraft export <version> --format adapter`` writes.
    """

    files: list[str] = Field(description="the version's model files that make up the adapter")
    applies_to: str = Field(description="the parent whose weights the adapter changes: a version id, or 'base'")
    base_model_name_or_path: str = Field(
        description="what adapter_config.json names as its base: the base's source when the parent is the base, "
        "else <model>@<parent version>"
    )
    strength: float = Field(1.0, description="the search's α, already folded into the adapter's lora_B weights")


class Manifest(BaseModel):
    """Written last into a version folder; a version without a valid manifest does not exist for loading.

    ``files`` lists the sha256 and size of every model file of the version (``delta.safetensors``; for a lora
    version also its adapter, see ``adapter``). Reports written after the version was created (metrics.json,
    decision.json, card.md) are write-once attachments, not part of it.
    """

    format: Literal[1] = 1
    model: str
    version: str
    parent: str | None
    base: BaseRef
    recipe: dict[str, Any]
    batches: list[BatchRef] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list, description="every task this version is expected to know")
    training: TrainingRecord | None = None
    search: SearchRecord | None = Field(None, description="every candidate of the search, when the fine-tune searched")
    adapter: AdapterRef | None = Field(None, description="a lora version's PEFT adapter (among files), if stored")
    flow_run_id: str | None = Field(None, description="the Prefect flow run that trained this version, if one did")
    software: dict[str, str] = Field(
        default_factory=dict, description="versions of skillgraft, torch, transformers and peft that trained it"
    )
    files: dict[str, FileEntry] = Field(default_factory=dict)
    created_at: str = Field(default_factory=utcnow)
    created_by: str = ""
