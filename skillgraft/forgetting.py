"""Forgetting across a model's history: the accuracy matrix and the continual-learning metrics computed on it.

``R[i][j]`` is the score on task ``j`` of the model after version ``i`` (row 0 is the base model when its scores are
known). A task is *learned* at the first row whose version trained on it. On that matrix, with ``L`` the last row:

* **average accuracy** after row ``i``: the mean of ``R[i][j]`` over the tasks learned by row ``i``;
* **backward transfer** (BWT, Lopez-Paz & Ranzato 2017): the mean over tasks learned before ``L`` of
  ``R[L][j] − R[learned(j)][j]`` (negative: later training cost those tasks);
* **forgetting** of a task learned before ``L`` (Chaudhry et al. 2018): ``max(R[k][j] for learned(j) ≤ k < L) −
  R[L][j]`` — the best it ever scored minus what it scores now;
* **drop versus the base model**: ``R[base][j] − R[L][j]`` (positive: worse than the untouched base).

The metric functions are pure, on plain lists (``None`` where a score is unknown); :func:`load_matrix` builds the
matrix from a registry: the versions from the base up to one version (the champion by default), their manifests
(which tasks each version trained) and their ``metrics.json`` attachments (the regression suite's scores).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from skillgraft import layout
from skillgraft.registry import Registry
from skillgraft.schemas.report import RegressionReport
from skillgraft.store.base import KeyNotFound

Matrix = Sequence[Sequence[float | None]]

__all__ = [
    "AccuracyMatrix",
    "ForgettingReport",
    "average_accuracy",
    "backward_transfer",
    "drop_vs_base",
    "forgetting",
    "load_matrix",
    "summarize",
]


# --- pure metrics on the matrix --------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def average_accuracy(R: Matrix, learned_at: Sequence[int | None], row: int = -1) -> float | None:
    """Mean score after ``row`` over the tasks learned by then (None when none is, or none was scored)."""
    i = row % len(R)
    return _mean([R[i][j] for j, at in enumerate(learned_at) if at is not None and at <= i and R[i][j] is not None])


def backward_transfer(R: Matrix, learned_at: Sequence[int | None]) -> float | None:
    """Mean of ``R[L][j] − R[learned(j)][j]`` over tasks learned before the last row ``L`` (None when there are none)."""
    last = len(R) - 1
    return _mean([
        R[last][j] - R[at][j]
        for j, at in enumerate(learned_at)
        if at is not None and at < last and R[last][j] is not None and R[at][j] is not None
    ])  # fmt: skip


def forgetting(R: Matrix, learned_at: Sequence[int | None]) -> list[float | None]:
    """Per task: the best earlier score since it was learned minus the last one (None: learned last, or never)."""
    last = len(R) - 1
    out: list[float | None] = []
    for j, at in enumerate(learned_at):
        earlier = [R[k][j] for k in range(at, last) if R[k][j] is not None] if at is not None else []
        out.append(max(earlier) - R[last][j] if earlier and R[last][j] is not None else None)
    return out


def drop_vs_base(R: Matrix, base_row: int | None = 0) -> list[float | None]:
    """Per task: the base model's score minus the last row's (positive: worse than the base; None: not scored)."""
    if base_row is None:
        return [None] * (len(R[0]) if R else 0)
    last = len(R) - 1
    return [
        R[base_row][j] - R[last][j] if R[base_row][j] is not None and R[last][j] is not None else None
        for j in range(len(R[base_row]))
    ]


# --- the matrix and its report ---------------------------------------------------------------------------------------


class AccuracyMatrix(BaseModel):
    """``scores[i][j]``: task ``tasks[j]`` after ``rows[i]`` (``"base"`` or a version id); ``learned_at[j]``: the row
    whose version first trained task ``j`` (None: never trained in this history, e.g. a task only the base knew)."""

    model: str = ""
    rows: list[str]
    tasks: list[str]
    scores: list[list[float | None]]
    learned_at: list[int | None]
    base_row: int | None = Field(None, description="index of the base model's row, when its scores are known")

    def markdown(self) -> str:
        head = "| after | " + " | ".join(self.tasks) + " |"
        lines = [head, "|---|" + "---:|" * len(self.tasks)]
        for i, label in enumerate(self.rows):
            cells = []
            for j, value in enumerate(self.scores[i]):
                mark = "*" if self.learned_at[j] == i else ""
                cells.append("—" if value is None else f"{value:.3f}{mark}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n\n`*`: the version that trained the task."


class ForgettingReport(BaseModel):
    matrix: AccuracyMatrix
    average_accuracy: list[float | None] = Field(description="after each row")
    backward_transfer: float | None
    forgetting: dict[str, float | None]
    average_forgetting: float | None
    drop_vs_base: dict[str, float | None]

    def markdown(self) -> str:
        def fmt(value: float | None, sign: bool = True) -> str:
            return "—" if value is None else (f"{value:+.3f}" if sign else f"{value:.3f}")

        m = self.matrix
        lines = [m.markdown(), ""]
        lines.append(f"- average accuracy after {m.rows[-1]}: {fmt(self.average_accuracy[-1], sign=False)}")
        lines.append(f"- backward transfer: {fmt(self.backward_transfer)}")
        lines.append(f"- average forgetting: {fmt(self.average_forgetting)}")
        lines += ["", "| task | forgetting | drop vs base |", "|---|---:|---:|"]
        lines += [f"| {t} | {fmt(self.forgetting[t])} | {fmt(self.drop_vs_base[t])} |" for t in m.tasks]
        return "\n".join(lines)


def summarize(matrix: AccuracyMatrix) -> ForgettingReport:
    """Every metric of the module on ``matrix``."""
    R, at = matrix.scores, matrix.learned_at
    per_task = forgetting(R, at)
    return ForgettingReport(
        matrix=matrix,
        average_accuracy=[average_accuracy(R, at, i) for i in range(len(R))],
        backward_transfer=backward_transfer(R, at),
        forgetting=dict(zip(matrix.tasks, per_task)),
        average_forgetting=_mean([f for f in per_task if f is not None]),
        drop_vs_base=dict(zip(matrix.tasks, drop_vs_base(R, matrix.base_row))),
    )


# --- from the registry -----------------------------------------------------------------------------------------------


def _metrics(reg: Registry, version: str) -> RegressionReport | None:
    try:
        return RegressionReport.model_validate_json(reg.read_attachment(version, layout.METRICS))
    except KeyNotFound:
        return None


def load_matrix(reg: Registry, version: str | None = None) -> AccuracyMatrix:
    """The accuracy matrix of the history leading to ``version`` (default: the champion), oldest first.

    A version's row is its candidate scores in its own ``metrics.json``; when it has none, the scores it got as the
    champion in its child's ``metrics.json``. The base row comes from the first version's report when that compared
    against the base. Raises LookupError when there is no such version (or no champion and no ``version``).
    """
    if version is None:
        pointer = reg.champion()
        if pointer is None:
            raise LookupError(f"model {reg.model!r} has no champion: pass the version whose history you want")
        version = pointer.version
    chain: list[str] = []
    v: str | None = version
    while v is not None:
        chain.append(v)
        v = reg.manifest(v).parent
    chain.reverse()
    manifests = [reg.manifest(v) for v in chain]
    reports = [_metrics(reg, v) for v in chain]

    rows: list[dict[str, float]] = []
    for i, report in enumerate(reports):
        if report is not None:
            rows.append({t: s.score for t, s in report.candidate_scores.items()})
        elif i + 1 < len(reports) and (child := reports[i + 1]) is not None:
            rows.append({t: s.score for t, s in child.champion_scores.items()})
        else:
            rows.append({})
    labels = list(chain)
    base_row = None
    if reports and reports[0] is not None and reports[0].champion == "base":
        rows.insert(0, {t: s.score for t, s in reports[0].champion_scores.items()})
        labels.insert(0, "base")
        base_row = 0
    offset = 1 if base_row == 0 else 0

    tasks: list[str] = []
    learned: dict[str, int] = {}
    for i, m in enumerate(manifests):
        for task in sorted({b.task for b in m.batches}):
            learned.setdefault(task, i + offset)
            if task not in tasks:
                tasks.append(task)
    for row in rows:
        tasks += sorted(t for t in row if t not in tasks)
    return AccuracyMatrix(
        model=reg.model,
        rows=labels,
        tasks=tasks,
        scores=[[row.get(t) for t in tasks] for row in rows],
        learned_at=[learned.get(t) for t in tasks],
        base_row=base_row,
    )
