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
        0.02, ge=0, le=1, description="largest drop a guard set may show against the champion or the base (its own "
        "tolerance, set with `guard add --tolerance`, wins)",
    )
    significance: Literal["off", "mcnemar", "bootstrap"] = Field(
        "off", description="off: every drop over max_drop counts; else only drops unlikely to be noise (p < alpha)"
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the paired test (and of the warning)")
    bootstrap_samples: int = Field(2000, ge=100, description="resamples for significance: bootstrap")
    bootstrap_seed: int = Field(0, description="seed of the bootstrap resampling (the decision stays repeatable)")


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
        checks = [r for r in self.reasons if not r.startswith("warn ")]
        warned = len(self.reasons) - len(checks)
        return f"all {len(checks)} checks passed" + (f" ({warned} warnings)" if warned else "")

    def markdown(self) -> str:
        head = f"**{self.verdict.upper()}** candidate `{self.candidate}` against champion `{self.champion}`"
        return head + "\n\n" + "\n".join(f"- {r}" for r in self.reasons)
