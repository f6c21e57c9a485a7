"""What the regression suite reports: per-task scores, the suite's rows, the drift probes and the whole report.

Plain pydantic records with no model code (no torch), so what reads a stored ``metrics.json`` — the command line, the
gate, the forgetting matrix — needs nothing heavy; :mod:`skillgraft.evaluate` and :mod:`skillgraft.probe` produce them
(and re-export them under their old names).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field


class BiasProbe(BaseModel):
    """The drift probes of a candidate against its champion on old-task prompts.

    ``champion`` / ``candidate`` are the number-token masses (the paper's probe; kept under these names so older
    reports still read). The answer-token masses and the KL are None in reports written before they existed, or when
    there was nothing to measure them on (no new task in the suite: no answer tokens).
    """

    prompts: int
    champion: float = Field(description="number-token mass per greedy step, champion")
    candidate: float = Field(description="number-token mass per greedy step, candidate")
    steps: int = Field(4, description="greedy steps probed per prompt")
    answer_tokens: int = Field(0, description="how many token ids the new tasks' answers use")
    answer_champion: float | None = Field(None, description="mass on the new tasks' answer tokens, champion")
    answer_candidate: float | None = Field(None, description="mass on the new tasks' answer tokens, candidate")
    kl: float | None = Field(None, description="mean KL(champion ‖ candidate) per step, nats")

    @property
    def delta(self) -> float:
        """Rise of the number-token mass from champion to candidate."""
        return self.candidate - self.champion

    @property
    def answer_delta(self) -> float | None:
        """Rise of the answer-token mass from champion to candidate (None when not measured)."""
        if self.answer_champion is None or self.answer_candidate is None:
            return None
        return self.answer_candidate - self.answer_champion


class TaskScore(BaseModel):
    task: str
    metric: str
    score: float
    n: int
    correct: list[int] = Field(default_factory=list, description="per-example 0/1, same order as the eval split")
    samples: list[tuple[str, str, str]] = Field(default_factory=list, description="(prompt, prediction, answer)")


class SuiteRow(BaseModel):
    task: str
    new: bool
    metric: str
    n: int
    champion: float
    candidate: float
    guard: bool = False
    base: float | None = Field(None, description="a guard's score on the bare base (guards are held to it too)")
    tolerance: float | None = Field(None, description="a guard's own tolerance; None: the gate's guard_max_drop")

    @property
    def delta(self) -> float:
        return self.candidate - self.champion

    @property
    def kind(self) -> str:
        return "new" if self.new else "guard" if self.guard else "old"


class RegressionReport(BaseModel):
    champion: str = Field(description="what the candidate was compared with (a version id, or 'base')")
    candidate: str
    rows: list[SuiteRow]
    probe: BiasProbe | None = None
    champion_scores: dict[str, TaskScore] = Field(default_factory=dict)
    candidate_scores: dict[str, TaskScore] = Field(default_factory=dict)

    def row(self, task: str) -> SuiteRow:
        for r in self.rows:
            if r.task == task:
                return r
        raise KeyError(f"task {task!r} is not in the regression report (tasks: {[r.task for r in self.rows]})")

    def markdown(self, verdicts: Mapping[str, bool | None] | None = None) -> str:
        """The suite as a table, then the drift probes. ``verdicts`` (the gate's per-task outcome, from
        :meth:`~skillgraft.schemas.gate.Decision.task_verdicts`) adds a ``gate`` column: pass, FAIL, or — where the
        gate judged no check of the task."""
        gate_head, gate_rule = (" gate |", "---|") if verdicts is not None else ("", "")
        lines = [
            f"| task | kind | n | champion ({self.champion}) | candidate ({self.candidate}) | delta |{gate_head}",
            f"|---|---|---:|---:|---:|---:|{gate_rule}",
        ]
        for r in self.rows:
            base = f" (base {r.base:.3f})" if r.base is not None else ""
            gate = f" {verdict_text(verdicts.get(r.task))} |" if verdicts is not None else ""
            lines.append(
                f"| {r.task} | {r.kind} | {r.n} | {r.champion:.3f}{base} | {r.candidate:.3f} | {r.delta:+.3f} |{gate}"
            )
        if (p := self.probe) is not None:
            lines.append(f"\nDrift probes on {p.prompts} old-task and guard prompts ({p.steps} greedy steps each):\n")
            lines.append(
                f"- number-token mass: champion {p.champion:.4f}, candidate {p.candidate:.4f} ({p.delta:+.4f})"
            )
            if p.answer_delta is not None:
                lines.append(
                    f"- mass on the new tasks' {p.answer_tokens} answer tokens: champion {p.answer_champion:.4f}, "
                    f"candidate {p.answer_candidate:.4f} ({p.answer_delta:+.4f})"
                )
            if p.kl is not None:
                lines.append(f"- mean KL(champion ‖ candidate) per step: {p.kl:.4f} nats")
        return "\n".join(lines)


def verdict_text(passed: bool | None) -> str:
    """How a table shows the gate's per-task outcome."""
    return "—" if passed is None else "pass" if passed else "**FAIL**"
