"""The gate's verdict has one owner: `decide` records every check (observed value, limit, passed, why), and the
regression artifact, the decision artifact, the model card and the command line render those records. At the
boundaries — a gain exactly at `min_gain`, a drop over `max_drop` the paired test can't tell from noise, a guard
exactly at its tolerance, and each just past it — every rendering gives each task the verdict the decision gave."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from skillgraft.evaluate import RegressionReport, SuiteRow, TaskScore
from skillgraft.gate import Check, Decision, GatePolicy, decide
from skillgraft.refs import VersionRef
from skillgraft.registry import Registry
from skillgraft.store.base import ObjectStore

POLICY = dict(min_gain=0.05, max_drop=0.05, guard_max_drop=0.02, alpha=0.05)


def score(task: str, correct: list[int]) -> TaskScore:
    return TaskScore(
        task=task, metric="exact_match", score=sum(correct) / len(correct), n=len(correct), correct=correct
    )


def boundary_report(past: bool) -> RegressionReport:
    """``past=False``: every row exactly at its limit (or over it only by what the paired test calls noise);
    ``past=True``: every row just beyond it."""
    # old task: 20 paired examples, 12 right for the champion; the candidate loses 2 (p = 0.25: noise) or 5
    # (McNemar p = 0.031, bootstrap p ≈ 0.003: a real drop); either way the drop is over max_drop
    lost = 5 if past else 2
    first_a = score("first", [1] * 12 + [0] * 8)
    first_b = score("first", [0] * lost + [1] * (12 - lost) + [0] * 8)
    gain = 0.0499 if past else 0.05
    guard_after = 0.7799 if past else 0.78  # champion and base 0.80, tolerance 0.02
    rows = [
        SuiteRow(task="count", new=True, metric="exact_match", n=100, champion=0.25, candidate=0.25 + gain),
        SuiteRow(task="first", new=False, metric="exact_match", n=20, champion=first_a.score, candidate=first_b.score),
        SuiteRow(
            task="facts",
            new=False,
            guard=True,
            metric="exact_match",
            n=100,
            champion=0.80,
            candidate=guard_after,
            base=0.80,
        ),  # fmt: skip
    ]
    return RegressionReport(champion="v1", candidate="v2", rows=rows, champion_scores={"first": first_a},
                            candidate_scores={"first": first_b})  # fmt: skip


def table_after(markdown: str, header_start: str) -> list[list[str]]:
    """The cells of each row of the markdown table whose header line starts with ``header_start``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def verdict_of(cell: str) -> bool | None:
    return {"pass": True, "ok": True, "**FAIL**": False, "FAIL": False, "—": None}[cell]


def decision_check_verdicts(markdown: str) -> dict[str, bool]:
    """Per task, from the decision's table of checks (warnings never decide)."""
    out: dict[str, bool] = {}
    for outcome, kind, subject, *_ in table_after(markdown, "| result | kind | subject |"):
        if kind in ("new", "old", "guard"):
            out[subject] = out.get(subject, True) and bool(verdict_of(outcome))
    return out


def suite_gate_column(markdown: str) -> dict[str, bool | None]:
    """Per task, the ``gate`` column of a regression suite table rendered in markdown."""
    return {row[0]: verdict_of(row[-1]) for row in table_after(markdown, "| task | kind | n |")}


def cli_gate_column(
    report: RegressionReport, decision: Decision, monkeypatch: pytest.MonkeyPatch
) -> dict[str, bool | None]:
    from skillgraft.cli import common

    console = Console(record=True, width=200, color_system=None)
    monkeypatch.setattr(common, "console", console)
    outcome = type("Outcome", (), dict(report=report, decision=decision, status="x", model="demo", champion="v1",
                                       notes=[]))()  # fmt: skip
    common.print_outcome(outcome)
    text = console.export_text()
    out: dict[str, bool | None] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 7 and cells[0] in {r.task for r in report.rows}:
            out[cells[0]] = verdict_of(cells[6])
    return out


@pytest.fixture
def card_for(
    local_store: ObjectStore, demo_registry: Callable[..., Any]
) -> Callable[[RegressionReport, Decision], str]:
    """The model card of a stored demo version, written for a given report and decision."""
    from skillgraft.steps import CandidateInfo, model_card

    reg: Registry = demo_registry(local_store, versions=1, champion=None)

    def card(report: RegressionReport, decision: Decision) -> str:
        cand = CandidateInfo(candidate=VersionRef(model=reg.model, version="v1"), parent=None, champion_etag=None,
                             new_tasks=["count"], known_tasks=["first"], trainable_parameters=1, total_parameters=2,
                             seconds=0.0, device="cpu", recipe="sa_proj", losses=[], log_every=10)  # fmt: skip
        return model_card(reg, cand, report, decision)

    return card


@pytest.mark.parametrize("significance", ["mcnemar", "bootstrap"])
@pytest.mark.parametrize("past", [False, True], ids=["at-the-limits", "just-past"])
def test_every_rendering_gives_each_task_the_decisions_verdict_at_the_boundaries(
    significance: str, past: bool, card_for: Callable[[RegressionReport, Decision], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from tasks import review

    report = boundary_report(past)
    decision = decide(report, GatePolicy(significance=significance, **POLICY), required_tasks=["first"])
    expected = {"count": not past, "first": not past, "facts": not past}

    # the records themselves: each boundary decided as documented, with the value and the limit it was held to
    by_task = {c.task: c for c in decision.checks if c.decides and c.task is not None}
    assert {t: c.passed for t, c in by_task.items()} == expected
    assert decision.promote is (not past)
    assert by_task["count"].limit == 0.05 and by_task["count"].bound == "min"
    assert by_task["first"].observed == pytest.approx(-lost_share(past)) and by_task["first"].limit == -0.05
    assert (by_task["first"].p_value >= 0.05) is (not past)
    assert by_task["facts"].limit == -0.02 and by_task["facts"].observed == pytest.approx(-0.02 - (1e-4 if past else 0))
    assert [c.kind for c in decision.checks if not c.decides] == ["warning"]  # 20 examples: too few, says a warning
    assert decision.reasons == [c.reason() for c in decision.checks if c.decides and not c.passed] + [
        c.reason() for c in decision.checks if c.decides and c.passed] + [c.reason() for c in decision.checks if not c.decides]  # fmt: skip

    table = review.regression_table(report, decision)
    decision_md = review.decision_markdown(decision, report, "file:///store/models/demo/versions/v2/", "limits")
    card = card_for(report, decision)

    assert {row["task"]: row["pass"] for row in table} == expected
    assert decision_check_verdicts(decision_md) == expected
    assert suite_gate_column(decision_md) == expected
    assert suite_gate_column(card) == expected
    assert decision_check_verdicts(card) == expected
    assert cli_gate_column(report, decision, monkeypatch) == expected
    summary = review.regression_summary(report, decision)
    assert summary.endswith("failed on count, first, facts" if past else "all 3 tasks pass")
    for row in table:  # the row's gate line is the check's own line
        assert row["gate"] == by_task[row["task"]].why


def lost_share(past: bool) -> float:
    return (5 if past else 2) / 20


def test_rows_the_gate_stopped_before_are_shown_as_not_judged() -> None:
    from tasks import review

    report = boundary_report(False)
    decision = decide(report, GatePolicy(**POLICY), required_tasks=["first", "last"])  # 'last' was never scored
    assert not decision.promote
    assert [(c.kind, c.passed) for c in decision.checks] == [("precondition", False)]
    assert decision.reasons == ["FAIL candidate was not evaluated on ['last']"]
    table = review.regression_table(report, decision)
    assert all(row["pass"] is None for row in table)
    assert all(row["gate"] == "not judged: candidate was not evaluated on ['last']" for row in table)
    assert review.regression_summary(report, decision).endswith("not judged: candidate was not evaluated on ['last']")
    assert set(suite_gate_column(review.decision_markdown(decision, report, "here", "limits")).values()) == {None}


def test_a_decision_stored_before_checks_existed_still_reads_and_renders() -> None:
    old = Decision.model_validate({"promote": True, "reasons": ["ok new task 'count': 0.000 → 0.500"],
                                   "champion": "base", "candidate": "v1", "policy": {}})  # fmt: skip
    assert old.checks == [] and old.task_verdict("count") is None
    assert old.markdown().endswith("- ok new task 'count': 0.000 → 0.500")
    assert old.summary() == "all 1 checks passed"


def test_a_check_line_is_its_outcome_and_its_why() -> None:
    check = Check(kind="guard", subject="facts", task="facts", observed=-0.03, limit=-0.02, bound="min", passed=False,
                  why="guard 'facts': 0.800 → 0.770 (-0.030, limit −0.020)")  # fmt: skip
    assert check.reason() == "FAIL guard 'facts': 0.800 → 0.770 (-0.030, limit −0.020)"
    assert check.limit_text() == "≥ -0.02"
    assert Check(kind="warning", subject="first", passed=True, why="small split").reason() == "warn small split"


@pytest.mark.parametrize("significance", ["off", "mcnemar"])
@pytest.mark.parametrize("past", [False, True], ids=["at-the-limits", "just-past"])
def test_what_the_search_holds_a_candidate_to_is_the_gates_own_checks(past: bool, significance: str) -> None:
    """skillgraft.search judges its candidates with gate.keeps: the decision's checks without the new-task gains, so
    a drop the paired test calls noise passes the search exactly when it passes the gate."""
    from skillgraft.gate import keeps

    report = boundary_report(past)
    policy = GatePolicy(**POLICY, significance=significance)
    decision = decide(report, policy)
    kept = keeps(report, policy)
    assert kept == [c for c in decision.checks if c.kind != "new"]
    first = next(c for c in kept if c.subject == "first")
    # the old task dropped by 0.10 or 0.25, over max_drop both times: only the significance test lets the small one
    assert first.passed is (significance == "mcnemar" and not past)
    assert keeps(report, GatePolicy(**{**POLICY, "max_drop": None}))[0].kind == "precondition"
