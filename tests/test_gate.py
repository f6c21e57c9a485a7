"""The gate is one pure function: decisions at their boundaries, fail-closed."""

import pytest

from skillgraft.evaluate import BiasProbe, RegressionReport, SuiteRow
from skillgraft.gate import GatePolicy, decide


def report(rows, probe=None):
    return RegressionReport(
        champion="v1",
        candidate="v2",
        rows=[SuiteRow(task=t, new=new, metric="exact_match", n=100, champion=a, candidate=b) for t, new, a, b in rows],
        probe=probe,
    )


POLICY = GatePolicy(min_gain=0.05, max_drop=0.02)


def test_gate_promotes_a_candidate_that_learns_and_keeps_old_tasks():
    d = decide(report([("count", True, 0.10, 0.50), ("first", False, 0.90, 0.89)]), POLICY, required_tasks=["first"])
    assert d.promote and d.verdict == "promote"
    assert d.champion == "v1" and d.candidate == "v2" and d.policy == POLICY
    assert any("count" in r and "+0.400" in r for r in d.reasons)


@pytest.mark.parametrize(
    ("drop", "promote"),
    [(0.02, True), (0.0201, False), (0.0, True), (0.5, False)],
)
def test_gate_rejects_candidate_that_regresses_an_old_task_beyond_max_drop(drop, promote):
    d = decide(report([("count", True, 0.0, 0.6), ("first", False, 0.9, 0.9 - drop)]), POLICY)
    assert d.promote is promote
    if not promote:
        assert any(r.startswith("FAIL old task 'first'") for r in d.reasons)


@pytest.mark.parametrize(("gain", "promote"), [(0.05, True), (0.0499, False), (-0.1, False)])
def test_gate_requires_min_gain_on_each_new_task(gain, promote):
    d = decide(report([("count", True, 0.3, 0.3 + gain)]), POLICY)
    assert d.promote is promote


def test_gate_fails_closed_without_a_regression_limit():
    d = decide(report([("count", True, 0.0, 1.0)]), GatePolicy(max_drop=None))
    assert not d.promote
    assert "no regression limit" in d.reasons[0]


def test_gate_rejects_candidate_not_evaluated_on_every_known_task():
    d = decide(report([("count", True, 0.0, 1.0)]), POLICY, required_tasks=["first", "last"])
    assert not d.promote
    assert "['first', 'last']" in d.reasons[0]


def test_gate_rejects_when_report_has_no_new_task():
    assert not decide(report([("first", False, 0.9, 0.9)]), POLICY).promote


def test_gate_bias_limit_rejects_number_drift_on_old_prompts():
    rows = [("count", True, 0.0, 0.8), ("first", False, 0.9, 0.9)]
    policy = GatePolicy(min_gain=0.05, max_drop=0.02, max_bias_increase=0.1)
    assert decide(report(rows, BiasProbe(prompts=10, champion=0.05, candidate=0.15)), policy).promote
    d = decide(report(rows, BiasProbe(prompts=10, champion=0.05, candidate=0.40)), policy)
    assert not d.promote
    assert any("number-token mass" in r and r.startswith("FAIL") and "+0.3500" in r for r in d.reasons)
