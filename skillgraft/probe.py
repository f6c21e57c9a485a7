"""Label-free output-drift probes, measured on old-task prompts (no answers needed).

Zhu et al. (arXiv 2510.08564) found that most "forgetting" after a new skill is an output-distribution drift: after a
counting task the model puts more probability on number tokens everywhere. Three probes, all on the same prompts:

* **number-token mass** (the paper's probe): under the model's own greedy decoding, the probability on number tokens
  (digits, ordinals, number words) per generation step, averaged over steps and prompts;
* **answer-token mass**: the same, on the token ids seen in the *new* task's answers — the paper's probe generalised
  to a new task that is not about numbers;
* **mean KL divergence** ``KL(reference ‖ model)`` in nats between the next-token distributions of a reference model
  (the champion, or the starting point of a fine-tune) and the model, per step along the reference's greedy
  continuation of each prompt (teacher-forced, so both models see the same prefixes), averaged over steps and prompts.

A step counts while the sequence is alive: the step that emits the end-of-sequence token counts, later ones do not.

Prompts are text, or :class:`~skillgraft.vision.ImageExample` objects (prompt + image) for a vision-language model:
then ``tokenizer`` is the model's processor, and both models see the same pixels at every probed step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from skillgraft.schemas.report import BiasProbe
from skillgraft.vision import NOT_PER_TOKEN, ImageExample, batch_inputs, require_processor, text_tokenizer

NUMBER_WORDS = frozenset({
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty",
    "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million", "first", "second", "third",
    "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
})  # fmt: skip
_NUMBERISH = re.compile(r"^\d+([.,]\d+)?(st|nd|rd|th)?$")


# --- token sets ------------------------------------------------------------------------------------------------------


def number_token_ids(tokenizer) -> list[int]:
    """Vocabulary entries that read as numbers: digits, ordinals (1st, 2nd), number words (one, third...)."""
    ids = []
    for token, idx in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token]).strip().lower()
        if text and (_NUMBERISH.match(text) or text in NUMBER_WORDS):
            ids.append(idx)
    return sorted(ids)


def answer_token_ids(tokenizer, answers: Iterable[str]) -> list[int]:
    """Token ids used by ``answers``, tokenized as the trainer does (leading space, no special tokens), specials
    (eos, pad...) left out: the new task's answer vocabulary, whose mass on old prompts should not rise."""
    special = set(tokenizer.all_special_ids)
    ids: set[int] = set()
    for answer in answers:
        text = answer if answer.startswith(" ") else " " + answer
        ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return sorted(ids - special)


# --- the probes ------------------------------------------------------------------------------------------------------


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@dataclass
class _Greedy:
    """One batch of greedy continuations: per prompt its tokens, and per alive step the model's raw logits."""

    prompts: list[list[int]]
    generated: list[list[int]]  # alive steps only (the eos step included)
    logits: list[torch.Tensor]  # per prompt: (alive steps, vocab), float32 on the model's device
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)  # image inputs of the batch (on the CPU)
    per_token: dict[str, list[list[int]]] = field(default_factory=dict)  # per-prompt-token inputs, unpadded


def _batches(prompts: Sequence) -> Iterable[tuple[bool, list]]:
    """Text prompts and image examples in separate batches (a batch goes through one encoder), order kept within."""
    text = [p for p in prompts if not isinstance(p, ImageExample)]
    pictured = [p for p in prompts if isinstance(p, ImageExample)]
    return [(False, text)] * bool(text) + [(True, pictured)] * bool(pictured)


@torch.no_grad()
def _greedy(model, tokenizer, prompts: Sequence, steps: int, batch_size: int) -> Iterable[_Greedy]:
    model.eval()
    device = _device_of(model)
    model_type = getattr(getattr(model, "config", None), "model_type", "model")
    require_processor(tokenizer, model_type, prompts)
    processor, tokenizer = tokenizer, text_tokenizer(tokenizer)
    eos = tokenizer.eos_token_id
    for pictured, group in _batches(prompts):
        size = min(batch_size, 16) if pictured else batch_size
        for i in range(0, len(group), size):
            enc = batch_inputs(processor, model_type, group[i : i + size], device)
            gen = model.generate(
                **enc, max_new_tokens=steps, do_sample=False, pad_token_id=_pad_id(tokenizer), eos_token_id=eos,
                output_logits=True, return_dict_in_generate=True,
            )  # fmt: skip
            ids = enc["input_ids"]
            width = ids.shape[1]
            logits = torch.stack(gen.logits, dim=1).float()  # (batch, steps taken, vocab)
            out = _Greedy([], [], [])
            for key, value in enc.items():
                if key in ("input_ids", "attention_mask"):
                    continue
                if value.shape[:2] == ids.shape and not value.is_floating_point() and key not in NOT_PER_TOKEN:
                    out.per_token[key] = [value[r][enc["attention_mask"][r].bool()].tolist() for r in range(len(ids))]
                else:
                    out.pixels[key] = value.cpu()
            for row in range(ids.shape[0]):
                prompt = ids[row][enc["attention_mask"][row].bool()].tolist()
                tokens = gen.sequences[row, width:].tolist()
                alive = len(tokens)
                if eos is not None and eos in tokens:
                    alive = tokens.index(eos) + 1
                out.prompts.append(prompt)
                out.generated.append(tokens[:alive])
                out.logits.append(logits[row, :alive])
            yield out


class _Masses:
    """Running mean, per greedy step, of the probability on each named token set."""

    def __init__(self, token_sets: Mapping[str, Sequence[int]]) -> None:
        self.index = {name: torch.tensor(sorted(set(ids)), dtype=torch.long) for name, ids in token_sets.items()}
        self.totals = {name: 0.0 for name in self.index}
        self.count = 0

    def add(self, logits_per_prompt: Iterable[torch.Tensor]) -> None:
        for logits in logits_per_prompt:
            probs = torch.softmax(logits, dim=-1)
            self.count += probs.shape[0]
            for name, ids in self.index.items():
                if len(ids):
                    self.totals[name] += float(probs[:, ids.to(probs.device)].sum())

    def means(self) -> dict[str, float]:
        return {name: (total / self.count if self.count else 0.0) for name, total in self.totals.items()}


def greedy_mass(
    model, tokenizer, prompts: Sequence, token_sets: Mapping[str, Sequence[int]], steps: int = 4,
    batch_size: int = 64,
) -> dict[str, float]:  # fmt: skip
    """Mean probability per greedy step on each of ``token_sets`` (name → token ids), from one greedy decoding.

    An empty set or no prompts measures 0.0.
    """
    masses = _Masses(token_sets)
    if not prompts:
        return masses.means()
    for batch in _greedy(model, tokenizer, prompts, steps, batch_size):
        masses.add(batch.logits)
    return masses.means()


def number_mass(model, tokenizer, prompts: Sequence, steps: int = 4, batch_size: int = 64) -> float:
    """Mean probability on number tokens per greedy decoding step (the paper's output-bias probe)."""
    ids = number_token_ids(text_tokenizer(tokenizer))
    return greedy_mass(model, tokenizer, prompts, {"number": ids}, steps, batch_size)["number"]


@dataclass
class Reference:
    """A reference model's greedy continuations of the probe prompts, with its next-token log-probabilities along
    them: what :func:`mean_kl` compares another model with, without keeping the reference model itself."""

    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """Per batch: right-padded input ids, attention mask, and the (row, column) of every probed position."""
    inputs: list[dict[str, torch.Tensor]] = field(default_factory=list)
    """Per batch: further model inputs (an image batch's pixels, right-padded per-token inputs); empty for text."""
    logprobs: list[torch.Tensor] = field(default_factory=list)
    """Per batch: the reference's log-probabilities at the probed positions, (positions, vocab), on the CPU."""
    masses: dict[str, float] = field(default_factory=dict)
    """The reference's own greedy masses (filled by :func:`reference`)."""

    @property
    def positions(self) -> int:
        return sum(len(lp) for lp in self.logprobs)


def _teacher_forced_logprobs(model, input_ids, attention_mask, rows, cols, inputs=None) -> torch.Tensor:
    device = _device_of(model)
    extra = {k: v.to(device) for k, v in (inputs or {}).items()}
    out = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **extra)
    return torch.log_softmax(out.logits[rows.to(device), cols.to(device)].float(), dim=-1)


@torch.no_grad()
def reference(
    model, tokenizer, prompts: Sequence, *, steps: int = 4, batch_size: int = 64,
    token_sets: Mapping[str, Sequence[int]] | None = None,
) -> Reference:  # fmt: skip
    """Decode ``prompts`` greedily with ``model`` and keep what :func:`mean_kl` needs, plus the greedy masses on
    ``token_sets`` (one decoding serves both). Sequences are right-padded, so positions need no position ids."""
    model.eval()
    ref = Reference()
    masses = _Masses(token_sets or {})
    pad = _pad_id(text_tokenizer(tokenizer))
    for batch in _greedy(model, tokenizer, prompts, steps, batch_size):
        seqs = [p + g for p, g in zip(batch.prompts, batch.generated)]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        extra = dict(batch.pixels)
        for key in batch.per_token:  # 0 over the generated tokens and the padding, as in training
            extra[key] = torch.zeros((len(seqs), width), dtype=torch.long)
        rows: list[int] = []
        cols: list[int] = []
        for r, (p, g) in enumerate(zip(batch.prompts, batch.generated)):
            ids[r, : len(p) + len(g)] = torch.tensor(p + g)
            mask[r, : len(p) + len(g)] = 1
            for key, values in batch.per_token.items():
                extra[key][r, : len(p)] = torch.tensor(values[r])
            rows += [r] * len(g)
            cols += [len(p) - 1 + t for t in range(len(g))]  # the logits there predict generated token t
        r_t, c_t = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
        ref.batches.append((ids, mask, r_t, c_t))
        ref.inputs.append(extra)
        ref.logprobs.append(_teacher_forced_logprobs(model, ids, mask, r_t, c_t, extra).cpu())
        masses.add(batch.logits)
    ref.masses = masses.means()
    return ref


@torch.no_grad()
def mean_kl(ref: Reference, model) -> float:
    """Mean ``KL(reference ‖ model)`` in nats per probed step (0.0 for the reference itself, or with no prompts)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for (ids, mask, rows, cols), extra, ref_lp in zip(
            ref.batches, ref.inputs or [{}] * len(ref.batches), ref.logprobs
        ):
            lp = _teacher_forced_logprobs(model, ids, mask, rows, cols, extra)
            p = ref_lp.to(lp.device)
            total += float((p.exp() * (p - lp)).sum())
            count += len(rows)
    finally:
        model.train(was_training)
    return total / count if count else 0.0


def measure(
    champion, candidate, tokenizer, prompts: Sequence, *, answer_ids: Sequence[int] = (), steps: int = 4,
    batch_size: int = 64,
) -> BiasProbe:  # fmt: skip
    """All three probes of ``candidate`` against ``champion`` on ``prompts`` (old-task prompts).

    ``answer_ids``: the new tasks' answer tokens (:func:`answer_token_ids`); empty leaves the answer masses None.
    """
    sets = {"number": number_token_ids(text_tokenizer(tokenizer))}
    if answer_ids:
        sets["answer"] = list(answer_ids)
    ref = reference(champion, tokenizer, prompts, steps=steps, batch_size=batch_size, token_sets=sets)
    cand = greedy_mass(candidate, tokenizer, prompts, sets, steps, batch_size)
    return BiasProbe(
        prompts=len(prompts), champion=ref.masses["number"], candidate=cand["number"], steps=steps,
        answer_tokens=len(answer_ids),
        answer_champion=ref.masses.get("answer"), answer_candidate=cand.get("answer"),
        kl=mean_kl(ref, candidate),
    )  # fmt: skip
