"""The selective fine-tune: setup → fit → finish, over typed objects.

Loss is on answer tokens only (prompt tokens are masked). CUDA with bf16 autocast when a GPU is present, CPU otherwise.
Seeded; the loss curve is kept in the :class:`~skillgraft.refs.TrainingRecord` stored with the version.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator

from skillgraft.recipes import Recipe, Selection, apply_recipe, count_parameters, finish
from skillgraft.refs import TrainingRecord


class TrainConfig(BaseModel):
    """Knobs of the fine-tune; the defaults run on a laptop CPU."""

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

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_steps >= self.steps and self.warmup_steps > 0:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})")
        return self


class TrainingError(RuntimeError):
    """The fine-tune could not run; the champion and the data are untouched."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' asked for but no CUDA GPU is visible; use device: auto or cpu")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def encode(tokenizer, prompt: str, answer: str, max_length: int) -> Encoded:
    """``<bos> prompt answer <eos>`` with labels only on ``answer <eos>``.

    Prompt and answer are tokenized separately so the boundary is exact whatever the tokenizer.
    """
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    a = tokenizer(" " + answer if not answer.startswith(" ") else answer, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TrainingError("the tokenizer has no eos token: set tokenizer.eos_token so answers can end")
    ids = p + a + [eos]
    if len(ids) > max_length:
        raise TrainingError(
            f"an example is {len(ids)} tokens, over max_length={max_length} (prompt starts {prompt[:60]!r}); "
            "raise train.max_length or shorten the data"
        )
    return Encoded(ids, [-100] * len(p) + a + [eos])


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):  # right padding for training
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@dataclass
class FineTuned:
    model: torch.nn.Module
    selection: Selection
    record: TrainingRecord


StepCallback = Callable[[int, float], None]


def mix_replay(new: Sequence, old: Sequence, fraction: float, seed: int) -> list:
    """Training examples: all of ``new`` plus old-task examples so that they make up ``fraction`` of the mix.

    Rehearsal on a little old data is the cheapest guard against forgetting; with ``fraction`` 0 only new data trains.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"replay fraction must be in [0, 1), got {fraction}")
    if fraction == 0 or not old:
        return list(new)
    want = round(len(new) * fraction / (1 - fraction))
    rng = random.Random(f"replay:{seed}")
    picked = rng.sample(list(old), want) if want <= len(old) else [rng.choice(list(old)) for _ in range(want)]
    return list(new) + picked


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def fine_tune(
    model: torch.nn.Module,
    tokenizer,
    examples: Sequence,
    recipe: Recipe,
    cfg: TrainConfig,
    on_step: StepCallback | None = None,
) -> FineTuned:
    """Train the parameters ``recipe`` selects on ``examples`` (objects with ``prompt`` and ``answer``).

    Returns the trained model (LoRA adapters merged back, so parameter names match the base), the selection plan and
    the training record. Raises :class:`TrainingError` on empty data or over-long examples, before any step runs.
    """
    if not examples:
        raise TrainingError("no training examples: nothing to fine-tune on")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    use_bf16 = cfg.bf16 if cfg.bf16 is not None else (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if use_bf16 and device.type != "cuda":
        raise TrainingError("bf16 autocast is only used on CUDA here; set train.bf16: false on CPU")
    encoded = [encode(tokenizer, ex.prompt, ex.answer, cfg.max_length) for ex in examples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    model, selection = apply_recipe(model, recipe)
    model.to(device)
    model.train()
    trainable, total = count_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            done = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * done))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = random.Random(cfg.seed)
    order: list[int] = []
    losses: list[float] = []
    running: list[float] = []
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc=f"fine-tune ({selection.recipe.kind})", unit="step", leave=False)
    start = time.perf_counter()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            fresh = list(range(len(encoded)))
            gen.shuffle(fresh)
            order.extend(fresh * max(1, math.ceil(cfg.batch_size / len(fresh))))
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad_id).items()}
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {step}; lower train.learning_rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        value = float(loss.detach())
        running.append(value)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            losses.append(round(sum(running) / len(running), 6))
            running = []
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
        if on_step is not None:
            on_step(step, value)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    model.eval()
    model = finish(model, recipe).to("cpu")
    for p in model.parameters():
        p.requires_grad_(False)
    record = TrainingRecord(
        steps=cfg.steps,
        learning_rate=cfg.learning_rate,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=str(device),
        dtype="bf16-autocast" if use_bf16 else str(next(model.parameters()).dtype).replace("torch.", ""),
        seconds=round(seconds, 3),
        trainable_parameters=trainable,
        total_parameters=total,
        trained_tensors=list(selection.trainable),
        losses=losses,
    )
    return FineTuned(model=model, selection=selection, record=record)
