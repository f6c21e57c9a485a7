"""The gate's policy and its decision as plain records (pydantic only, no model code): what a stored
``decision.json`` holds, readable by the command line without loading anything heavy. :mod:`skillgraft.gate` makes
the decision (and re-exports these under their old names).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GatePolicy(BaseModel):
    """When a candidate may replace the champion. Scores are metric values in [0, 1]; 0.05 means 5 points.

        ``significance`` (default ``"off"``, the strictest): every observed drop over ``max_drop`` rejects, so on a small
        eval split a few unlucky examples can reject a good candidate. ``"mcnemar"``: a drop over ``max_drop`` rejects
        only when the exact one-sided McNemar test on the discordant pairs (examples the champion got right and the
        candidate wrong, against the reverse) gives p < ``alpha``. ``"bootstrap"``: the same rule with a paired bootstrap
        p-value (share of ``bootstrap_samples`` resamples of the examples in which the candidate is not worse; the
        percentile interval of the drop at level 1 − ``alpha`` is reported; with few discordant pairs it is less
    conservative than the exact test, so prefer ``"mcnemar"`` for small splits). Both compare exact matches per example; a task
        without paired per-example results is judged on its scores alone, as with ``"off"`` (fail-closed).
    """

    model_config = ConfigDict(extra="forbid")

    min_gain: float | None = Field(0.05, ge=0, description="each new task must improve by at least this much")
    max_drop: float | None = Field(0.05, ge=0, description="no old task may drop by more than this; None refuses all")
    max_bias_increase: float | None = Field(
        None, ge=0, description="largest allowed rise of number-token mass on old prompts (bias probe); None: off"
    )
    max_answer_mass_increase: float | None = Field(
        None, ge=0, description="largest allowed rise of mass on the new tasks' answer tokens on old prompts; None: off"
    )
    max_kl: float | None = Field(
        None, ge=0, description="largest allowed mean KL(champion ‖ candidate) per step on old prompts, nats; None: off"
    )
    guard_max_drop: float = Field(
        0.02,
        ge=0,
        le=1,
        description="largest drop a guard set may show against the champion or the base (its own "
        "tolerance, set with `guard add --tolerance`, wins)",
    )
    significance: Literal["off", "mcnemar", "bootstrap"] = Field(
        "off", description="off: every drop over max_drop counts; else only drops unlikely to be noise (p < alpha)"
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the paired test (and of the warning)")
    bootstrap_samples: int = Field(2000, ge=100, description="resamples for significance: bootstrap")
    bootstrap_seed: int = Field(0, description="seed of the bootstrap resampling (the decision stays repeatable)")


class Check(BaseModel):
    """One check the gate made: what it judged, the value it saw, the limit it held that value to, and the outcome.

    ``kind``: ``new`` / ``old`` / ``guard`` judge one row of the regression report (``task``); ``drift`` a drift probe
    over the whole report; ``precondition`` a fail-closed condition that stops the gate before any row is judged (no
    regression limit, a task not scored, no new task); ``warning`` informs and never decides. ``observed`` must be
    at least ``limit`` (``bound="min"``: a new task's gain, an old task's or a guard's change, which is negative for a
    drop) or at most ``limit`` (``bound="max"``: a drift probe's rise or KL). An old task may pass below its limit
    when the paired test (``p_value``) can't tell its drop from noise; ``why`` says so. Everything that shows the
    gate's verdict renders these records; none recomputes a threshold.
    """

    kind: Literal["new", "old", "guard", "drift", "precondition", "warning"]
    subject: str = Field(description="the task (new, old, guard, warning) or what was checked (drift, precondition)")
    task: str | None = Field(None, description="the report row this check judges; None for the report as a whole")
    observed: float | None = Field(None, description="the value held to the limit; None where nothing was measured")
    limit: float | None = None
    bound: Literal["min", "max"] | None = Field(None, description="observed must be ≥ (min) or ≤ (max) the limit")
    p_value: float | None = Field(None, description="the paired test's p-value, when one judged this drop")
    passed: bool
    why: str = Field(description="the check in one line, as the reasons list it")

    @property
    def decides(self) -> bool:
        return self.kind != "warning"

    @property
    def outcome(self) -> str:
        """``ok``, ``FAIL`` or ``warn``: the prefix of this check's line in :attr:`Decision.reasons`."""
        return "warn" if not self.decides else "ok" if self.passed else "FAIL"

    def reason(self) -> str:
        return f"{self.outcome} {self.why}"

    def limit_text(self) -> str:
        if self.limit is None or self.bound is None:
            return ""
        return f"{'≥' if self.bound == 'min' else '≤'} {self.limit:+.4g}"


class Decision(BaseModel):
    """The gate's verdict. ``checks`` are its records, one per check, in the order made; ``reasons`` are their lines
    (failed first on a rejection, warnings last). Decisions stored before checks were recorded have reasons only."""

    promote: bool
    reasons: list[str]
    champion: str
    candidate: str
    policy: GatePolicy
    checks: list[Check] = Field(default_factory=list)

    @classmethod
    def from_checks(cls, checks: list[Check], *, champion: str, candidate: str, policy: GatePolicy) -> Decision:
        """Promote when at least one check decides and every deciding check passed."""
        deciding = [c for c in checks if c.decides]
        failed = [c for c in deciding if not c.passed]
        promote = bool(deciding) and not failed
        reasons = [c.reason() for c in failed] + [c.reason() for c in deciding if c.passed]
        reasons += [c.reason() for c in checks if not c.decides]
        return cls(promote=promote, reasons=reasons, champion=champion, candidate=candidate, policy=policy,
                   checks=checks)  # fmt: skip

    @property
    def verdict(self) -> str:
        return "promote" if self.promote else "reject"

    def task_checks(self, task: str) -> list[Check]:
        """The deciding checks of one row of the report."""
        return [c for c in self.checks if c.task == task and c.decides]

    def task_verdict(self, task: str) -> bool | None:
        """Whether ``task``'s row passed the gate; None when the gate judged no check of it (it stopped at a
        precondition, or the decision was stored without checks)."""
        checks = self.task_checks(task)
        return all(c.passed for c in checks) if checks else None

    def task_verdicts(self, tasks: list[str]) -> dict[str, bool | None]:
        return {t: self.task_verdict(t) for t in tasks}

    def summary(self) -> str:
        """One line for the history: the failed checks on a rejection, a count of checks on a promotion."""
        failed = [r.removeprefix("FAIL ") for r in self.reasons if r.startswith("FAIL ")]
        if failed:
            return "; ".join(failed)
        if not self.promote:
            return "; ".join(self.reasons)
        checks = [r for r in self.reasons if not r.startswith("warn ")]
        warned = len(self.reasons) - len(checks)
        return f"all {len(checks)} checks passed" + (f" ({warned} warnings)" if warned else "")

    def markdown(self) -> str:
        """The verdict and every check: a table of the records (result, kind, subject, observed, limit, the line);
        a decision stored without records lists its reasons."""
        head = f"**{self.verdict.upper()}** candidate `{self.candidate}` against champion `{self.champion}`"
        if not self.checks:
            return head + "\n\n" + "\n".join(f"- {r}" for r in self.reasons)
        lines = [head, "", "| result | kind | subject | observed | limit | detail |", "|---|---|---|---:|---:|---|"]
        for c in self.checks:
            observed = f"{c.observed:+.4f}" if c.observed is not None else "—"
            outcome = "**FAIL**" if c.outcome == "FAIL" else c.outcome
            lines.append(f"| {outcome} | {c.kind} | {_cell(c.subject)} | {observed} | {c.limit_text() or '—'} | "
                         f"{_cell(c.why)} |")  # fmt: skip
        return "\n".join(lines)


def _cell(text: str) -> str:
    """``text`` inside one markdown table cell (a pipe would end the cell)."""
    return text.replace("|", "\\|").replace("\n", " ")
