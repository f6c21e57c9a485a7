"""The promotion policy: one pure function from a regression report and a policy to a decision. No I/O.

Fail-closed: with no regression limit configured nothing is promoted, and a candidate not scored on every task the
champion knows is rejected.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from skillgraft.evaluate import RegressionReport


class GatePolicy(BaseModel):
    """When a candidate may replace the champion. Scores are metric values in [0, 1]; 0.05 means 5 points."""

    min_gain: float | None = Field(0.05, ge=0, description="each new task must improve by at least this much")
    max_drop: float | None = Field(0.05, ge=0, description="no old task may drop by more than this; None refuses all")
    max_bias_increase: float | None = Field(
        None, ge=0, description="largest allowed rise of number-token mass on old prompts (bias probe); None: off"
    )


class Decision(BaseModel):
    promote: bool
    reasons: list[str]
    champion: str
    candidate: str
    policy: GatePolicy

    @property
    def verdict(self) -> str:
        return "promote" if self.promote else "reject"

    def summary(self) -> str:
        """One line for the history: the failed checks on a rejection, a count of checks on a promotion."""
        failed = [r.removeprefix("FAIL ") for r in self.reasons if r.startswith("FAIL ")]
        if failed:
            return "; ".join(failed)
        if not self.promote:
            return "; ".join(self.reasons)
        return f"all {len(self.reasons)} checks passed"

    def markdown(self) -> str:
        head = f"**{self.verdict.upper()}** candidate `{self.candidate}` against champion `{self.champion}`"
        return head + "\n\n" + "\n".join(f"- {r}" for r in self.reasons)


def decide(report: RegressionReport, policy: GatePolicy, *, required_tasks: list[str] | None = None) -> Decision:
    """Promote when every new task gains ≥ ``min_gain`` and no old task drops by more than ``max_drop``.

    ``required_tasks``: every task the champion knows; a candidate missing any of them is rejected.
    """
    ok: list[str] = []
    bad: list[str] = []

    def done(promote: bool, reasons: list[str]) -> Decision:
        return Decision(
            promote=promote, reasons=reasons, champion=report.champion, candidate=report.candidate, policy=policy
        )

    if policy.max_drop is None:
        return done(False, ["no regression limit (max_drop) configured: refusing to promote"])
    scored = {r.task for r in report.rows}
    if missing := sorted(set(required_tasks or []) - scored):
        return done(False, [f"candidate was not evaluated on {missing}"])
    new_rows = [r for r in report.rows if r.new]
    if not new_rows:
        return done(False, ["no new task in the report: nothing to gain"])
    for r in new_rows:
        need = policy.min_gain or 0.0
        line = f"new task '{r.task}': {r.champion:.3f} → {r.candidate:.3f} ({r.delta:+.3f}, needs ≥ {need:+.3f})"
        (ok if r.delta >= need - 1e-12 else bad).append(line)
    for r in report.rows:
        if r.new:
            continue
        line = f"old task '{r.task}': {r.champion:.3f} → {r.candidate:.3f} ({r.delta:+.3f}, limit −{policy.max_drop:.3f})"
        (bad if -r.delta > policy.max_drop + 1e-12 else ok).append(line)
    if policy.max_bias_increase is not None:
        if report.probe is None:
            bad.append("bias limit set but no old-task prompts to probe")
        else:
            p = report.probe
            line = (
                f"number-token mass on old prompts: {p.champion:.4f} → {p.candidate:.4f} ({p.delta:+.4f}, "
                f"limit +{policy.max_bias_increase:.4f})"
            )
            (bad if p.delta > policy.max_bias_increase + 1e-12 else ok).append(line)
    if bad:
        return done(False, [f"FAIL {line}" for line in bad] + [f"ok {line}" for line in ok])
    return done(True, [f"ok {line}" for line in ok])
