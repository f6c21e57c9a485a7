"""The selective fine-tune: :class:`Trainer` — setup → step … → finish — over typed objects.

Loss is on answer tokens only (prompt tokens are masked). CUDA with bf16 autocast when a GPU is present, CPU otherwise.
Seeded; the loss curve is kept in the :class:`~skillgraft.refs.TrainingRecord` stored with the version.

Drift watch (``TrainConfig.drift_watch``): every N steps the drift probes of :mod:`skillgraft.probe` compare the model
being trained with its starting point on a few old-task prompts. When drift goes over its budget training stops, and
the checkpoint that learned the most while within budget (lowest new-task loss) is the one returned; the curve is kept
in the record. Examples may carry model inputs beside the text (:class:`MultimodalExample`: an image for a VLM).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from skillgraft.probe import (
    Reference,
    answer_token_ids,
    greedy_mass,
    mean_kl,
    number_token_ids,
    reference,
)
from skillgraft.recipes import Recipe, Selection, apply_recipe, count_parameters, finish
from skillgraft.refs import DriftCurve, DriftPoint, TrainingRecord
from skillgraft.schemas.training import DriftWatch, TrainConfig
from skillgraft.vision import ImageExample, VisionError, encode_image_example, require_processor, text_tokenizer


class TrainingError(RuntimeError):
    """The fine-tune could not run; the champion and the data are untouched."""


@dataclass(frozen=True)
class MultimodalExample:
    """A training example with model inputs beside the text, e.g. one image for a vision-language model.

    ``inputs`` holds tensors as the model's processor would give them for this one example (LLaVA: ``pixel_values``
    of shape (1, 3, H, W); Qwen2-VL: ``pixel_values`` of shape (patches, dim) and ``image_grid_thw`` (1, 3)); a batch
    concatenates them along dim 0. ``token_inputs`` holds per-token inputs aligned with the tokenized prompt (special
    tokens included), e.g. Qwen2-VL's ``mm_token_type_ids``; they are 0 over the answer and the padding. The prompt
    must already hold the model's image placeholder tokens, as many as the image yields, as the processor writes them;
    or give ``prompt_ids``, the prompt as the processor tokenized it (special tokens included), used as they are.

    :func:`fine_tune` builds these itself from :class:`~skillgraft.vision.ImageExample` objects when it is given the
    model's processor. Examples with and without model inputs may be mixed (text-only replay beside image examples).
    """

    prompt: str
    answer: str
    inputs: Mapping[str, torch.Tensor]
    token_inputs: Mapping[str, Sequence[int]] = field(default_factory=dict)
    prompt_ids: Sequence[int] | None = None


class LazyInputs(Mapping):
    """Model inputs made on demand (an image's pixel tensors, by the processor, batch by batch): a training set keeps
    its images compressed instead of holding every example's tensors for the whole run. The keys are known upfront;
    :meth:`materialize` makes the tensors (each call anew)."""

    def __init__(self, keys: Sequence[str], make: Callable[[], Mapping[str, torch.Tensor]]) -> None:
        self._keys, self._make = tuple(keys), make

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._make()[key]

    def materialize(self) -> Mapping[str, torch.Tensor]:
        return self._make()


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    inputs: Mapping[str, torch.Tensor] | None = None
    token_inputs: Mapping[str, list[int]] | None = None


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' asked for but no CUDA GPU is visible; use device: auto or cpu")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def encode(tokenizer, prompt: str, answer: str, max_length: int, prompt_ids: Sequence[int] | None = None) -> Encoded:
    """``<bos> prompt answer <eos>`` with labels only on ``answer <eos>``.

    Prompt and answer are tokenized separately so the boundary is exact whatever the tokenizer. ``prompt_ids``: the
    prompt already tokenized (by a processor), used as given.
    """
    p = list(prompt_ids) if prompt_ids is not None else tokenizer(prompt, add_special_tokens=True)["input_ids"]
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
    """Right-padded ids, labels (-100 on padding) and mask; extra model inputs concatenated along dim 0."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):  # right padding for training
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    with_inputs = [e.inputs.materialize() if isinstance(e.inputs, LazyInputs) else e.inputs for e in batch if e.inputs]
    if with_inputs:  # examples without inputs (text only) add nothing: the model places features by placeholder
        out |= {key: torch.cat([inputs[key] for inputs in with_inputs]) for key in with_inputs[0]}
    for key in {k for e in batch for k in e.token_inputs or ()}:
        values = torch.zeros((len(batch), width), dtype=torch.long)
        for i, e in enumerate(batch):
            if e.token_inputs and key in e.token_inputs:
                values[i, : len(e.input_ids)] = torch.tensor(e.token_inputs[key])
        out[key] = values
    return out


def _encode_all(tokenizer, examples: Sequence, max_length: int) -> list[Encoded]:
    encoded = []
    keys: set[frozenset[str]] = set()
    for ex in examples:
        e = encode(tokenizer, ex.prompt, ex.answer, max_length, getattr(ex, "prompt_ids", None))
        if isinstance(ex, MultimodalExample):
            e.inputs = ex.inputs if isinstance(ex.inputs, LazyInputs) else dict(ex.inputs)
            prompt_len = next(i for i, t in enumerate(e.labels) if t != -100)
            e.token_inputs = {}
            for key, values in ex.token_inputs.items():
                if len(values) != prompt_len:
                    raise TrainingError(
                        f"token input {key!r} has {len(values)} values but the prompt is {prompt_len} tokens "
                        f"(prompt starts {ex.prompt[:60]!r}): give one value per prompt token, special tokens included"
                    )
                e.token_inputs[key] = list(values) + [0] * (len(e.input_ids) - prompt_len)
        if e.inputs or e.token_inputs:
            keys.add(frozenset(e.inputs or ()) | frozenset(f"token:{k}" for k in e.token_inputs or ()))
        encoded.append(e)
    if len(keys) > 1:
        raise TrainingError(
            f"examples carry different model inputs ({sorted(sorted(k) for k in keys)}); every example with model "
            "inputs must have the same kind (e.g. one image each, from one processor)"
        )
    return encoded


def _prepare(tokenizer, model, examples: Sequence) -> tuple[Any, list]:
    """(text tokenizer, examples) with every :class:`~skillgraft.vision.ImageExample` made into a
    :class:`MultimodalExample` by the model's processor (``tokenizer`` is then that processor)."""
    model_type = getattr(getattr(model, "config", None), "model_type", "model")
    try:
        require_processor(tokenizer, model_type, examples)
    except VisionError as e:
        raise TrainingError(str(e)) from None
    out = [_image_example(tokenizer, model_type, ex) if isinstance(ex, ImageExample) else ex for ex in examples]
    return text_tokenizer(tokenizer), out


def _image_example(processor, model_type: str, ex: ImageExample) -> MultimodalExample:
    """The processor runs once here for the prompt's tokens (their number depends on the image) and again for the
    pixels each time the example is in a batch."""
    enc = encode_image_example(processor, model_type, ex)
    lazy = LazyInputs(list(enc["inputs"]), lambda: encode_image_example(processor, model_type, ex)["inputs"])
    return MultimodalExample(prompt=enc["prompt"], answer=ex.answer, inputs=lazy, token_inputs=enc["token_inputs"],
                             prompt_ids=enc["prompt_ids"])  # fmt: skip


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


class _Watch:
    """The drift watch of one run: the start's probe reference, the checks, and the best checkpoint within budget."""

    def __init__(self, model, tokenizer, cfg: DriftWatch, prompts: Sequence, new: list[Encoded], pad_id: int,
                 answer_ids: list[int], batch_size: int) -> None:  # fmt: skip
        # ``tokenizer``: the model's processor when the probe prompts include image examples
        self.cfg, self.tokenizer, self.pad_id, self.batch_size = cfg, tokenizer, pad_id, batch_size
        self.prompts = list(prompts)[: cfg.prompts]
        self.new = new
        self.sets = {"number": number_token_ids(text_tokenizer(tokenizer))}
        if answer_ids:
            self.sets["answer"] = answer_ids
        elif cfg.metric == "answer_mass":
            raise TrainingError("drift_watch.metric answer_mass: the new-task answers use no ordinary tokens to watch")
        self.ref: Reference = reference(
            model, tokenizer, self.prompts, steps=cfg.probe_steps, batch_size=batch_size, token_sets=self.sets
        )
        self.curve = DriftCurve(metric=cfg.metric, budget=cfg.budget, every=cfg.every, prompts=len(self.prompts),
                                kept_step=0)  # fmt: skip
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (new-task loss, step, trainable params)
        self.over = 0

    @torch.no_grad()
    def _new_loss(self, model) -> float:
        device = next(model.parameters()).device
        total, tokens = 0.0, 0
        for i in range(0, len(self.new), self.batch_size):
            batch = {k: v.to(device) for k, v in collate(self.new[i : i + self.batch_size], self.pad_id).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            tokens += n
        return total / max(1, tokens)

    def check(self, model, step: int) -> bool:
        """Probe ``model`` after ``step`` steps; True when training must stop."""
        was_training = model.training
        model.eval()
        try:
            kl = mean_kl(self.ref, model)
            masses = greedy_mass(model, self.tokenizer, self.prompts, self.sets, self.cfg.probe_steps, self.batch_size)
            loss = self._new_loss(model)
        finally:
            model.train(was_training)
        rise = {name: masses[name] - self.ref.masses[name] for name in masses}
        if self.cfg.metric == "kl":
            drift = kl
        else:
            drift = rise[self.cfg.metric.removesuffix("_mass")]
        within = drift <= self.cfg.budget + 1e-12
        self.curve.points.append(DriftPoint(
            step=step, drift=round(drift, 6), kl=round(kl, 6), number_mass=round(masses["number"], 6),
            answer_mass=round(masses["answer"], 6) if "answer" in masses else None, new_loss=round(loss, 6),
            within_budget=within,
        ))  # fmt: skip
        if within:
            self.over = 0
            if self.best is None or loss <= self.best[0]:
                params = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
                self.best = (loss, step, params)
            return False
        self.over += 1
        if self.over >= self.cfg.patience:
            self.curve.stopped_at = step
            self.curve.reason = (
                f"{self.cfg.metric} drift {drift:.4f} over budget {self.cfg.budget:.4f} at step {step}"
                + (f" ({self.over} checks in a row)" if self.over > 1 else "")
            )
            return True
        return False

    def keep_best(self, model, last_step: int) -> None:
        """Load the best checkpoint within budget into ``model`` (trainable parameters only) and record it."""
        assert self.best is not None  # the start is always within budget (its drift is 0)
        loss, step, params = self.best
        self.curve.kept_step = step
        if step != last_step:
            named = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in params.items():
                    named[name].copy_(value)
        kept = f"kept step {step} (new-task loss {loss:.4f}, lowest within budget)"
        self.curve.reason = f"{self.curve.reason}; {kept}" if self.curve.reason else kept


class Trainer:
    """One selective fine-tune, in three parts: :meth:`setup` (data, recipe, drift watch, optimizer), :meth:`step`
    (one optimizer step on the next batch; False when training should stop) and :meth:`finish` (best checkpoint
    within the drift budget, adapters merged, the :class:`~skillgraft.refs.TrainingRecord`).

    :func:`fine_tune` runs the three in order; a caller that needs to act between steps drives them itself.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, recipe: Recipe, cfg: TrainConfig,
                 on_step: StepCallback | None = None, *, accelerator: Any | None = None) -> None:  # fmt: skip
        """``accelerator``: an ``accelerate.Accelerator`` when this is one rank of a distributed fine-tune
        (:mod:`skillgraft.distributed` makes one per process); the model is then wrapped for DDP and each rank
        trains on its share of every global batch."""
        self.model, self.tokenizer, self.recipe, self.cfg, self.on_step = model, tokenizer, recipe, cfg, on_step
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.done = 0  # optimizer steps run so far
        self.stopped = False  # the drift watch stopped training early
        self._ready = False

    # --- setup ------------------------------------------------------------------------------------------------

    def setup(self, examples: Sequence, *, probe_prompts: Sequence[str] = (), new_examples: Sequence = ()) -> None:
        """Check and encode the data, select the recipe's parameters, start the drift watch and the optimizer.

        Raises :class:`TrainingError` before anything trains (see :func:`fine_tune`)."""
        cfg = self.cfg
        if not examples:
            raise TrainingError("no training examples: nothing to fine-tune on")
        watch_cfg = cfg.drift_watch
        if watch_cfg is not None and not probe_prompts:
            raise TrainingError(
                "train.drift_watch is set but no probe prompts were given: pass old-task prompts as probe_prompts, "
                "or set drift_watch: null"
            )
        if watch_cfg is not None and self.world > 1:
            raise TrainingError(
                f"train.drift_watch probes the model in one process; with train.processes {self.world} set "
                "drift_watch: null (or processes: 1)"
            )
        seed_everything(cfg.seed)
        self.device = device = self.accelerator.device if self.accelerator is not None else resolve_device(cfg.device)
        use_bf16 = cfg.bf16 if cfg.bf16 is not None else (device.type == "cuda" and torch.cuda.is_bf16_supported())
        if use_bf16 and device.type != "cuda":
            raise TrainingError("bf16 autocast is only used on CUDA here; set train.bf16: false on CPU")
        self.use_bf16 = use_bf16
        processor = self.tokenizer
        tokenizer, examples = _prepare(processor, self.model, examples)
        new_examples = _prepare(processor, self.model, new_examples)[1] if new_examples else new_examples
        self.encoded = _encode_all(tokenizer, examples, cfg.max_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        self.model, self.selection = apply_recipe(self.model, self.recipe)
        self.model.to(device)
        self._unwrapped = self.model
        if self.world > 1:
            self.model = self.accelerator.prepare_model(self.model)  # DDP: gradients averaged over the ranks
        share = cfg.batch_size // self.world
        self.micro = min(cfg.micro_batch_size or share, share)
        # the accumulating step (several ranks, or micro-batches): every loss is a sum over answer tokens divided by
        # the global batch's answer-token count, so N ranks x M micro-batches give the one-batch gradient
        self.accumulating = self.world > 1 or self.micro < cfg.batch_size
        self.watch = None
        if watch_cfg is not None:
            new = list(new_examples or examples)[: watch_cfg.examples]
            self.watch = _Watch(
                self.model, processor, watch_cfg, probe_prompts, _encode_all(tokenizer, new, cfg.max_length),
                self.pad_id, answer_token_ids(tokenizer, [ex.answer for ex in new]), cfg.batch_size,
            )  # fmt: skip
            self.watch.check(self.model, 0)
        self.model.train()
        self.trainable, self.total = count_parameters(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.gen = random.Random(cfg.seed)
        self.order: list[int] = []
        self.losses: list[float] = []
        self.running: list[float] = []
        self.bar = self._progress_bar() if cfg.progress else None
        self.seconds = 0.0
        self._ready = True

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            done = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * done))
        return 1.0

    def _progress_bar(self):
        import sys

        from tqdm.auto import tqdm

        # on a terminal a live bar; in logs (CI, a Prefect worker) a line every 15 s instead of every step
        live = sys.stderr.isatty()
        return tqdm(total=self.cfg.steps, desc=f"fine-tune ({self.selection.recipe.kind})", unit="step", leave=False,
                    mininterval=0.1 if live else 15.0, maxinterval=15.0 if live else 60.0)  # fmt: skip

    # --- step -------------------------------------------------------------------------------------------------

    @property
    def running_out(self) -> bool:
        """No step left: the configured count is reached or the drift watch stopped training."""
        return self.stopped or self.done >= self.cfg.steps

    def next_indices(self) -> list[int]:
        """The next global batch's example indices: a seeded shuffled order, reshuffled every pass (the same on
        every rank)."""
        size = self.cfg.batch_size
        if len(self.order) < size:
            fresh = list(range(len(self.encoded)))
            self.gen.shuffle(fresh)
            self.order.extend(fresh * max(1, math.ceil(size / len(fresh))))
        idx, self.order = self.order[:size], self.order[size:]
        return idx

    def _collated(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in collate([self.encoded[i] for i in idx], self.pad_id).items()}

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next global batch, on the device."""
        return self._collated(self.next_indices())

    def _forward_backward(self) -> torch.Tensor:
        """One global batch the plain way: one forward and backward, the mean loss over its answer tokens."""
        batch = self.next_batch()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            loss = self.model(**batch).loss
        self._check_finite(loss)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss.detach()

    def _accumulated_backward(self) -> torch.Tensor:
        """One global batch over ranks and micro-batches: this rank takes every world-th example, in micro-batches;
        each micro-batch's loss is its answer-token loss sum over the global batch's answer-token count (times the
        rank count, which DDP's averaging divides out). Returns the global batch's mean loss (all ranks agree)."""
        from contextlib import nullcontext

        idx = self.next_indices()
        tokens = sum(sum(1 for t in self.encoded[i].labels[1:] if t != -100) for i in idx)  # after the causal shift
        mine = idx[self.rank :: self.world]
        chunks = [mine[j : j + self.micro] for j in range(0, len(mine), self.micro)]
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        count = torch.tensor(float(tokens), device=self.device)
        for j, chunk in enumerate(chunks):
            sync = j == len(chunks) - 1 or self.world == 1
            with (
                self.model.no_sync() if not sync else nullcontext(),
                torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16),
            ):
                loss = self.model(**self._collated(chunk), num_items_in_batch=count).loss
            self._check_finite(loss)
            (loss * self.world).backward()
            total += loss.detach().float()
        if self.world > 1:
            torch.distributed.all_reduce(total)
        return total

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {self.done}; lower train.learning_rate")

    def step(self) -> bool:
        """One optimizer step; the drift watch checks on its schedule. True while there is a step left."""
        if not self._ready:
            raise TrainingError("Trainer.step before setup")
        cfg, model, step = self.cfg, self.model, self.done
        t0 = time.perf_counter()
        loss = self._accumulated_backward() if self.accumulating else self._forward_backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.done = done = step + 1
        value = float(loss.detach())
        self.running.append(value)
        last = done == cfg.steps
        watch = self.watch
        if watch is not None and (done % watch.cfg.every == 0 or last):
            self.stopped = watch.check(model, done)
        if done % cfg.log_every == 0 or last or (self.stopped and self.running):
            self.losses.append(round(sum(self.running) / len(self.running), 6))
            self.running = []
        if self.bar is not None:
            self.bar.update(1)
            postfix = {"loss": f"{value:.3f}", **({"drift": f"{watch.curve.points[-1].drift:.3f}"} if watch else {})}
            self.bar.set_postfix(postfix, refresh=False)  # refresh=True would print a line per step into logs
        if self.on_step is not None:
            self.on_step(step, value)
        self.seconds += time.perf_counter() - t0  # the record's seconds: the steps, their checks and callbacks
        return not self.running_out

    # --- finish -----------------------------------------------------------------------------------------------

    def finish(self) -> FineTuned:
        """Keep the drift watch's best checkpoint, merge adapters, freeze, move to CPU; the record of what ran."""
        if self.bar is not None:
            self.bar.close()
        self.model = self._unwrapped  # a DDP wrapper's module: the parameters themselves
        if self.watch is not None:
            self.watch.keep_best(self.model, self.done)
        self.model.eval()
        model = finish(self.model, self.recipe).to("cpu")
        for p in model.parameters():
            p.requires_grad_(False)
        record = TrainingRecord(
            steps=self.done,  # optimizer steps actually run (a drift watch may stop early)
            learning_rate=self.cfg.learning_rate,
            batch_size=self.cfg.batch_size,
            processes=self.world,
            seed=self.cfg.seed,
            device=str(self.device),
            dtype="bf16-autocast" if self.use_bf16 else str(next(model.parameters()).dtype).replace("torch.", ""),
            seconds=round(self.seconds, 3),
            trainable_parameters=self.trainable,
            total_parameters=self.total,
            trained_tensors=list(self.selection.trainable),
            losses=self.losses,
            drift=self.watch.curve if self.watch is not None else None,
        )
        return FineTuned(model=model, selection=self.selection, record=record)


def fine_tune(
    model: torch.nn.Module,
    tokenizer,
    examples: Sequence,
    recipe: Recipe,
    cfg: TrainConfig,
    on_step: StepCallback | None = None,
    *,
    probe_prompts: Sequence[str] = (),
    new_examples: Sequence = (),
) -> FineTuned:
    """Train the parameters ``recipe`` selects on ``examples`` (objects with ``prompt`` and ``answer``; a
    :class:`MultimodalExample` also carries model inputs such as an image).

    With ``cfg.drift_watch``: ``probe_prompts`` are old-task prompts to probe drift on (required), and
    ``new_examples`` the new-task examples whose loss picks the checkpoint to keep (default: the first
    ``drift_watch.examples`` training examples).

    With ``cfg.processes`` above 1 (or ``auto`` and several GPUs) the fine-tune runs as that many DDP ranks
    (:mod:`skillgraft.distributed`); ``on_step`` is then not called.

    Returns the trained model (LoRA adapters merged back, so parameter names match the base), the selection plan and
    the training record. Raises :class:`TrainingError` on empty data, over-long examples, mixed model inputs, or a
    drift watch without probe prompts, before any step runs.
    """
    from skillgraft.distributed import process_count

    if (processes := process_count(cfg.processes)) > 1:  # DDP ranks through accelerate (skillgraft.distributed)
        from skillgraft import distributed

        return distributed.fine_tune(model, tokenizer, examples, recipe, cfg, processes, new_examples=new_examples)
    trainer = Trainer(model, tokenizer, recipe, cfg, on_step)
    trainer.setup(examples, probe_prompts=probe_prompts, new_examples=new_examples)
    while not trainer.running_out and trainer.step():
        pass
    return trainer.finish()
