"""The regression suite: champion and candidate scored on every task the model knows plus the new ones.

Predictions come from greedy decoding; scores come from `evaluate` metric modules shipped with skillgraft (offline);
each task keeps its per-example matches (``TaskScore.correct``) so the gate can compare champion and candidate example
by example. Alongside the scores, the output-drift probes of :mod:`skillgraft.probe` on old-task prompts: number-token
mass (Zhu et al., arXiv 2510.08564), mass on the new tasks' answer tokens, and KL(champion ‖ candidate).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from skillgraft.probe import (
    BiasProbe,
    answer_token_ids,
    measure,
    number_mass,
    number_token_ids,
)
from skillgraft.schemas.report import RegressionReport, SuiteRow, TaskScore
from skillgraft.vision import ImageExample, batch_inputs, require_processor, text_tokenizer

__all__ = [
    "BiasProbe",
    "EvalTask",
    "RegressionReport",
    "SuiteRow",
    "TaskScore",
    "load_metric",
    "number_mass",
    "number_token_ids",
    "predict",
    "predict_examples",
    "predict_images",
    "run_suite",
    "score_task",
]

_METRICS = Path(__file__).parent / "metrics"


@cache
def load_metric(name: str):
    """An `evaluate` metric module shipped in ``skillgraft/metrics/<name>/`` (loaded by path: works offline)."""
    import evaluate

    path = _METRICS / name
    if not path.is_dir():
        known = sorted(p.name for p in _METRICS.iterdir() if p.is_dir())
        raise ValueError(f"unknown metric {name!r}; shipped metrics: {known}")
    return evaluate.load(str(path))


def normalise(text: str) -> str:
    return " ".join(text.split())


@dataclass
class EvalTask:
    """One task of the suite: its name, metric, decoding budget, eval examples, and whether this run teaches it."""

    name: str
    metric: str
    max_new_tokens: int
    examples: Sequence  # objects with .prompt and .answer
    new: bool = False
    guard: bool = False  # a guard set (skillgraft.guards): held out, never trained on, protected by its own tolerance
    tolerance: float | None = None  # a guard's own tolerance (None: the gate's guard_max_drop)
    base: float | None = None  # a guard's score on the bare base, when known
    scorer: Callable[[Any, Any], TaskScore] | None = (
        None  # scores a model itself (an lm-eval guard); else greedy + metric
    )
    probe_only: bool = False  # prompts without answers (a prompts guard): read by the drift probes, never scored


_NUMERIC_ANSWER = re.compile(r"^[\d\s.,+\-/%]+$")


def numeric_answers(examples: Sequence) -> bool:
    """True when most reference answers are numbers (digits, separators, signs) — a task where numbers are right."""
    answers = [ex.answer.strip() for ex in examples]
    return bool(answers) and sum(bool(_NUMERIC_ANSWER.match(a)) for a in answers) * 2 > len(answers)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _generate(model, tokenizer, items: Sequence, max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions of one kind of item (text prompts, or image examples with the processor as tokenizer)."""
    model.eval()
    device = _device_of(model)
    tok = text_tokenizer(tokenizer)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model_type = getattr(getattr(model, "config", None), "model_type", "model")
    out: list[str] = []
    for i in range(0, len(items), batch_size):
        enc = batch_inputs(tokenizer, model_type, items[i : i + batch_size], device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                             eos_token_id=tok.eos_token_id)  # fmt: skip
        out.extend(tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return [normalise(o) for o in out]


def predict(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy completions of ``prompts`` (left padding, batched); special tokens stripped."""
    return _generate(model, tokenizer, list(prompts), max_new_tokens, batch_size)


def predict_images(
    model, processor, examples: Sequence[ImageExample], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy completions of image + prompt examples through the model's processor (left padding, batched)."""
    return _generate(model, processor, list(examples), max_new_tokens, batch_size)


def predict_examples(model, tokenizer, examples: Sequence, max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy completions of examples in order: text prompts through the tokenizer, :class:`ImageExample` objects
    (prompt + image) through the processor (``tokenizer`` must then be the model's processor)."""
    model_type = getattr(getattr(model, "config", None), "model_type", "model")
    require_processor(tokenizer, model_type, examples)
    text = [i for i, ex in enumerate(examples) if not isinstance(ex, ImageExample)]
    pictured = [i for i, ex in enumerate(examples) if isinstance(ex, ImageExample)]
    preds: list[str] = [""] * len(examples)
    if text:
        for i, p in zip(
            text, predict(model, tokenizer, [examples[i].prompt for i in text], max_new_tokens, batch_size)
        ):
            preds[i] = p
    if pictured:
        got = predict_images(model, tokenizer, [examples[i] for i in pictured], max_new_tokens, min(batch_size, 16))
        for i, p in zip(pictured, got):
            preds[i] = p
    return preds


def score_task(model, tokenizer, task: EvalTask, batch_size: int = 64) -> TaskScore:
    """Score one task: greedy predictions, the metric computed by its `evaluate` module, per-example matches kept.

    Examples with images (:class:`~skillgraft.vision.ImageExample`) need the model's processor as ``tokenizer``.
    """
    prompts = [ex.prompt for ex in task.examples]
    refs = [normalise(ex.answer) for ex in task.examples]
    if not prompts:
        raise ValueError(f"task {task.name!r} has no eval examples: it can't be regression-tested")
    preds = predict_examples(model, tokenizer, task.examples, task.max_new_tokens, batch_size)
    result = load_metric(task.metric).compute(predictions=preds, references=refs)
    value = float(result[task.metric])
    correct = [int(m) for m in result["matches"]]  # per example, as the metric itself judged it
    return TaskScore(
        task=task.name, metric=task.metric, score=value, n=len(refs), correct=correct,
        samples=list(zip(prompts, preds, refs))[:5],
    )  # fmt: skip


def run_suite(
    champion, candidate, tokenizer, tasks: Sequence[EvalTask], *, champion_label: str, candidate_label: str,
    probe_prompts: int = 64, probe_steps: int = 4, batch_size: int = 64,
) -> RegressionReport:  # fmt: skip
    """Score champion and candidate on every task; probe drift on up to ``probe_prompts`` prompts of each old task.

    The answer-token probe uses the token ids of the new tasks' answers (those of their eval examples). ``tokenizer``
    is the model's processor when tasks have images; the drift probes then read old image prompts with their images.
    """
    rows: list[SuiteRow] = []
    champ_scores: dict[str, TaskScore] = {}
    cand_scores: dict[str, TaskScore] = {}
    for task in tasks:
        if task.probe_only:
            continue
        if task.scorer is not None:
            a, b = task.scorer(champion, tokenizer), task.scorer(candidate, tokenizer)
        else:
            a, b = score_task(champion, tokenizer, task, batch_size), score_task(candidate, tokenizer, task, batch_size)
        champ_scores[task.name], cand_scores[task.name] = a, b
        rows.append(SuiteRow(task=task.name, new=task.new, metric=a.metric, n=a.n, champion=a.score, candidate=b.score,
                             guard=task.guard, base=task.base, tolerance=task.tolerance))  # fmt: skip
    # the drift probe reads old tasks and guards whose right answers are not numbers: on a numeric old task (count),
    # mass on number tokens is the skill, not drift
    probed = [t for t in tasks if not t.new and t.scorer is None and (t.probe_only or not numeric_answers(t.examples))]
    old_prompts = [
        ex if isinstance(ex, ImageExample) else ex.prompt for t in probed for ex in list(t.examples)[:probe_prompts]
    ]
    answers = [ex.answer for t in tasks if t.new for ex in t.examples]
    probe = None
    text_tok = text_tokenizer(tokenizer)
    if old_prompts:
        probe = measure(
            champion, candidate, tokenizer, old_prompts, answer_ids=answer_token_ids(text_tok, answers),
            steps=probe_steps, batch_size=batch_size,
        )  # fmt: skip
    return RegressionReport(
        champion=champion_label, candidate=candidate_label, rows=rows, probe=probe,
        champion_scores=champ_scores, candidate_scores=cand_scores,
    )  # fmt: skip
