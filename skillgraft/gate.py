"""The promotion policy: one pure function from a regression report and a policy to a decision. No I/O.

Fail-closed: with no regression limit configured nothing is promoted, and a candidate not scored on every task the
champion knows is rejected.

Checks, each a :class:`~skillgraft.schemas.gate.Check` record on the decision (what was checked, the value seen, the
limit, passed or not, why) and a reason line (``ok ...``, ``FAIL ...``, or ``warn ...`` which informs and never
decides). The records are the one account of the verdict: the regression and decision artifacts, the model card and
the command line render them and recompute no threshold.

* every new task gains at least ``min_gain``;
* no old task drops by more than ``max_drop`` — with ``significance`` on, a drop counts only when it is also unlikely
  to be noise, judged per example on the paired results of champion and candidate (``TaskScore.correct``);
* every guard set stays within its tolerance against the champion and against the base;
* drift probes on old-task prompts (:mod:`skillgraft.probe`), each off unless its limit is set: rise of number-token
  mass (``max_bias_increase``), rise of mass on the new tasks' answer tokens (``max_answer_mass_increase``), mean
  KL(champion ‖ candidate) (``max_kl``);
* a warning per old task whose eval split is too small to tell a drop of ``max_drop`` from noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from skillgraft.schemas.gate import Check, Decision, GatePolicy
from skillgraft.schemas.report import RegressionReport, SuiteRow, TaskScore

# --- paired comparison of champion and candidate ---------------------------------------------------------------------


class Paired(BaseModel):
    """Champion and candidate on the same examples: losses (champion right, candidate wrong), wins (the reverse)."""

    n: int
    losses: int
    wins: int
    p_value: float
    method: Literal["mcnemar", "bootstrap"]
    interval: tuple[float, float] | None = Field(None, description="bootstrap percentile interval of the drop")

    def describe(self) -> str:
        text = f"{self.losses} lost / {self.wins} gained of {self.n}, {self.method} p={self.p_value:.3g}"
        if self.interval is not None:
            text += f", drop in [{self.interval[0]:+.3f}, {self.interval[1]:+.3f}]"
        return text


def mcnemar_p(losses: int, wins: int) -> float:
    """Exact one-sided McNemar p-value that the candidate is worse: P(X ≥ losses), X ~ Binomial(losses + wins, ½)."""
    if losses + wins == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(losses, losses + wins, 0.5, alternative="greater").pvalue)


def bootstrap_drop(
    champion: Sequence[int], candidate: Sequence[int], *, samples: int, seed: int, alpha: float
) -> tuple[float, tuple[float, float]]:
    """Paired bootstrap of the drop (champion − candidate accuracy): ``(p, interval)`` where ``p`` is the share of
    resamples in which the candidate is not worse, and ``interval`` the percentile interval at level 1 − ``alpha``."""
    import numpy as np

    diff = np.asarray(champion, dtype=np.int8) - np.asarray(candidate, dtype=np.int8)
    rng = np.random.default_rng(seed)
    drops = np.empty(samples)
    chunk = max(1, 4_000_000 // max(1, len(diff)))
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        idx = rng.integers(0, len(diff), size=(stop - start, len(diff)))
        drops[start:stop] = diff[idx].mean(axis=1)
    p = float((drops <= 0).mean())
    lo, hi = np.quantile(drops, [alpha / 2, 1 - alpha / 2])
    return p, (float(lo), float(hi))


def paired(champion: TaskScore, candidate: TaskScore, policy: GatePolicy) -> Paired | None:
    """The paired comparison of one task under ``policy.significance``; None when it is off or the per-example
    results don't pair up (missing, or of different lengths)."""
    a, b = champion.correct, candidate.correct
    if policy.significance == "off" or not a or len(a) != len(b):
        return None
    losses = sum(1 for x, y in zip(a, b) if x and not y)
    wins = sum(1 for x, y in zip(a, b) if y and not x)
    if policy.significance == "mcnemar":
        return Paired(n=len(a), losses=losses, wins=wins, p_value=mcnemar_p(losses, wins), method="mcnemar")
    p, interval = bootstrap_drop(a, b, samples=policy.bootstrap_samples, seed=policy.bootstrap_seed, alpha=policy.alpha)
    return Paired(n=len(a), losses=losses, wins=wins, p_value=p, method="bootstrap", interval=interval)


def smallest_detectable_losses(alpha: float) -> int:
    """The fewest lost examples (with none gained) that the one-sided McNemar test calls significant at ``alpha``:
    the smallest k with ½ᵏ ≤ alpha (5 at 0.05)."""
    return max(1, math.ceil(math.log2(1 / alpha) - 1e-12))


def split_warning(row: SuiteRow, n: int, policy: GatePolicy) -> str | None:
    """A warning when ``n`` paired examples are too few to tell a drop of ``max_drop`` from noise at ``alpha``."""
    if not policy.max_drop or n <= 0:
        return None
    k = smallest_detectable_losses(policy.alpha)
    if k / n <= policy.max_drop:
        return None
    need = math.ceil(k / policy.max_drop)
    effect = "reject on what may be noise" if policy.significance == "off" else "pass as noise even when real"
    return (
        f"old task '{row.task}': eval split of {n} examples is too small for max_drop {policy.max_drop:.3f}: a paired "
        f"test needs ≥ {k} lost examples ({k / n:.3f}) to tell a drop from noise at alpha {policy.alpha:g}, so drops "
        f"between {policy.max_drop:.3f} and {k / n:.3f} {effect}; use ≥ {need} eval examples or a larger max_drop"
    )


# --- the decision ----------------------------------------------------------------------------------------------------


def decide(report: RegressionReport, policy: GatePolicy, *, required_tasks: list[str] | None = None) -> Decision:
    """Promote when every new task gains ≥ ``min_gain``, no old task drops by more than ``max_drop`` (and, with
    ``significance`` on, significantly), every guard stays within its tolerance, and every drift probe with a limit
    stays within it. Each check is a :class:`~skillgraft.schemas.gate.Check` on the decision.

    ``required_tasks``: every task the champion knows; a candidate missing any of them is rejected.
    """

    def done(checks: list[Check]) -> Decision:
        return Decision.from_checks(checks, champion=report.champion, candidate=report.candidate, policy=policy)

    if policy.max_drop is None:
        return done([_refusal("max_drop", "no regression limit (max_drop) configured: refusing to promote")])
    scored = {r.task for r in report.rows}
    if missing := sorted(set(required_tasks or []) - scored):
        return done([_refusal("coverage", f"candidate was not evaluated on {missing}")])
    new_rows = [r for r in report.rows if r.new]
    if not new_rows:
        return done([_refusal("new tasks", "no new task in the report: nothing to gain")])
    return done([_new_task(r, policy) for r in new_rows] + keeps(report, policy))


def keeps(report: RegressionReport, policy: GatePolicy) -> list[Check]:
    """The checks on what the candidate must keep — every old task, every guard, every drift probe with a limit —
    exactly as :func:`decide` makes them, without the new-task gains. The fine-tune's search
    (:mod:`skillgraft.search`) holds its candidates to these, so it cannot pick one the gate would reject for a drop
    or a drift (a missing ``max_drop`` is one failed precondition here too)."""
    if policy.max_drop is None:
        return [_refusal("max_drop", "no regression limit (max_drop) configured: refusing to promote")]
    checks: list[Check] = []
    for r in report.rows:
        if r.new:
            continue
        checks.extend([_guard(r, policy)] if r.guard else _old_task(r, report, policy))
    checks.extend(_probes(report, policy))
    return checks


def _refusal(subject: str, why: str) -> Check:
    return Check(kind="precondition", subject=subject, passed=False, why=why)


def _new_task(r: SuiteRow, policy: GatePolicy) -> Check:
    need = policy.min_gain or 0.0
    line = f"new task '{r.task}': {r.champion:.3f} → {r.candidate:.3f} ({r.delta:+.3f}, needs ≥ {need:+.3f})"
    return Check(kind="new", subject=r.task, task=r.task, observed=r.delta, limit=need, bound="min",
                 passed=r.delta >= need - 1e-12, why=line)  # fmt: skip


def _old_task(r: SuiteRow, report: RegressionReport, policy: GatePolicy) -> list[Check]:
    """The old task's check, and a warning after it when its eval split is too small for ``max_drop``."""
    assert policy.max_drop is not None
    line = f"old task '{r.task}': {r.champion:.3f} → {r.candidate:.3f} ({r.delta:+.3f}, limit −{policy.max_drop:.3f})"
    over = -r.delta > policy.max_drop + 1e-12
    a, b = report.champion_scores.get(r.task), report.candidate_scores.get(r.task)
    pair = paired(a, b, policy) if a is not None and b is not None else None
    if policy.significance != "off" and pair is None:
        line += "; no paired per-example results, judged on the scores alone"
    if pair is not None:
        noise = pair.p_value >= policy.alpha
        line += f"; {pair.describe()}"
        if over and noise:
            line += f" ≥ alpha {policy.alpha:g}: not told from noise"
        over = over and not noise
    out = [Check(kind="old", subject=r.task, task=r.task, observed=r.delta, limit=-policy.max_drop, bound="min",
                 p_value=pair.p_value if pair is not None else None, passed=not over, why=line)]  # fmt: skip
    n = pair.n if pair is not None else (len(a.correct) if a is not None and a.correct else r.n)
    if (w := split_warning(r, n, policy)) is not None:
        out.append(Check(kind="warning", subject=r.task, task=r.task, passed=True, why=w))
    return out


def _guard(r: SuiteRow, policy: GatePolicy) -> Check:
    """A guard may drop by at most its tolerance against the champion, and against the base when its base score is
    known (so a lineage cannot lose a base ability a little at a time). Observed: the worse of the two changes."""
    tol = r.tolerance if r.tolerance is not None else policy.guard_max_drop
    base = f", base {r.base:.3f}" if r.base is not None else ""
    line = f"guard '{r.task}': {r.champion:.3f} → {r.candidate:.3f} ({r.delta:+.3f}{base}, limit −{tol:.3f})"
    worst = min(r.delta, r.candidate - r.base) if r.base is not None else r.delta
    return Check(kind="guard", subject=r.task, task=r.task, observed=worst, limit=-tol, bound="min",
                 passed=-worst <= tol + 1e-12, why=line)  # fmt: skip


def _probes(report: RegressionReport, policy: GatePolicy) -> list[Check]:
    p = report.probe
    limits = [
        ("number-token mass on old prompts", policy.max_bias_increase, "rise"),
        ("mass on the new tasks' answer tokens on old prompts", policy.max_answer_mass_increase, "rise"),
        ("mean KL(champion ‖ candidate) on old prompts", policy.max_kl, "kl"),
    ]
    out: list[Check] = []
    for i, (what, limit, kind) in enumerate(limits):
        if limit is None:
            continue

        def check(passed: bool, why: str, observed: float | None = None, what: str = what,
                  limit: float = limit) -> Check:  # fmt: skip
            return Check(kind="drift", subject=what, observed=observed, limit=limit, bound="max", passed=passed,
                         why=why)  # fmt: skip

        if p is None:
            if not any(not r.new for r in report.rows):  # a first training (bootstrap): nothing to drift from
                out.append(check(True, f"{what}: no old tasks, nothing to drift from"))
            else:
                out.append(check(False, f"{what}: limit set but no old-task prompts to probe"))
            continue
        if kind == "kl":
            if p.kl is None:
                out.append(check(False, f"{what}: limit set but the report has no KL probe"))
                continue
            out.append(check(p.kl <= limit + 1e-12, f"{what}: {p.kl:.4f} nats (limit {limit:.4f})", p.kl))
            continue
        before, after = (p.champion, p.candidate) if i == 0 else (p.answer_champion, p.answer_candidate)
        if before is None or after is None:
            out.append(
                check(False, f"{what}: limit set but the report has no answer-token probe (no new-task answers)")
            )
            continue
        rise = after - before
        out.append(check(rise <= limit + 1e-12, f"{what}: {before:.4f} → {after:.4f} ({rise:+.4f}, limit +{limit:.4f})",
                         rise))  # fmt: skip
    return out
