"""The gate is one pure function: decisions at their boundaries, fail-closed."""

import pytest

from skillgraft.evaluate import BiasProbe, RegressionReport, SuiteRow, TaskScore
from skillgraft.gate import GatePolicy, decide, mcnemar_p, smallest_detectable_losses


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


# --- drift probes as gate limits -------------------------------------------------------------------------------------

ROWS = [("count", True, 0.0, 0.8), ("first", False, 0.9, 0.9)]


def test_gate_answer_mass_and_kl_limits_reject_drift_and_show_the_value():
    probe = BiasProbe(prompts=10, champion=0.05, candidate=0.05, answer_tokens=5, answer_champion=0.01,
                      answer_candidate=0.31, kl=0.8)  # fmt: skip
    assert decide(report(ROWS, probe), POLICY).promote  # limits off by default
    d = decide(report(ROWS, probe), GatePolicy(min_gain=0.05, max_drop=0.02, max_answer_mass_increase=0.1))
    assert not d.promote
    assert any(r.startswith("FAIL mass on the new tasks' answer tokens") and "+0.3000" in r for r in d.reasons)
    d = decide(report(ROWS, probe), GatePolicy(min_gain=0.05, max_drop=0.02, max_kl=0.5))
    assert not d.promote
    assert any(r.startswith("FAIL mean KL") and "0.8000 nats" in r for r in d.reasons)
    assert decide(report(ROWS, probe), GatePolicy(min_gain=0.05, max_drop=0.02, max_kl=0.9)).promote


def test_gate_probe_limit_on_a_report_without_that_probe_fails_closed():
    old_probe = BiasProbe(prompts=10, champion=0.05, candidate=0.05)  # written before answer mass and KL existed
    for policy in (GatePolicy(max_kl=1.0), GatePolicy(max_answer_mass_increase=1.0)):
        d = decide(report(ROWS, old_probe), policy)
        assert not d.promote and any(r.startswith("FAIL") and "limit set but" in r for r in d.reasons)
    assert not decide(report(ROWS), GatePolicy(max_bias_increase=0.1)).promote  # old tasks but no probe


def test_gate_probe_limits_pass_a_first_training_that_has_no_old_tasks():
    policy = GatePolicy(max_bias_increase=0.05, max_answer_mass_increase=0.05, max_kl=0.5)
    d = decide(report([("first", True, 0.0, 0.9)]), policy)
    assert d.promote and sum("no old tasks, nothing to drift from" in r for r in d.reasons) == 3


# --- significance-aware regression check ------------------------------------------------------------------------------


def paired_report(n, both, losses, wins, new_gain=0.5):
    """Old task 'first' with per-example results: ``both`` right in both, ``losses`` right only in the champion,
    ``wins`` right only in the candidate, the rest wrong in both."""
    rest = n - both - losses - wins
    champ = [1] * both + [1] * losses + [0] * wins + [0] * rest
    cand = [1] * both + [0] * losses + [1] * wins + [0] * rest
    a, b = sum(champ) / n, sum(cand) / n
    rep = report([("count", True, 0.0, new_gain), ("first", False, a, b)])
    rep.champion_scores["first"] = TaskScore(task="first", metric="exact_match", score=a, n=n, correct=champ)
    rep.candidate_scores["first"] = TaskScore(task="first", metric="exact_match", score=b, n=n, correct=cand)
    return rep


def test_mcnemar_p_is_the_exact_one_sided_binomial_tail():
    assert mcnemar_p(8, 2) == pytest.approx(56 / 1024)  # P(X ≥ 8), X ~ Bin(10, ½)
    assert mcnemar_p(5, 0) == pytest.approx(1 / 32)
    assert mcnemar_p(0, 0) == 1.0
    assert smallest_detectable_losses(0.05) == 5 and smallest_detectable_losses(0.01) == 7


def test_significance_off_rejects_a_noisy_drop_that_mcnemar_waves_through():
    rep = paired_report(n=300, both=250, losses=8, wins=2)  # drop 0.020 over max_drop 0.015, p = 0.055
    off = decide(rep, GatePolicy(min_gain=0.05, max_drop=0.015))
    assert not off.promote and any(r.startswith("FAIL old task 'first'") for r in off.reasons)
    on = decide(rep, GatePolicy(min_gain=0.05, max_drop=0.015, significance="mcnemar"))
    assert on.promote
    line = next(r for r in on.reasons if "old task 'first'" in r)
    assert line.startswith("ok") and "8 lost / 2 gained of 300" in line and "p=0.0547" in line and "noise" in line


def test_mcnemar_rejects_a_drop_that_is_both_large_and_significant():
    rep = paired_report(n=300, both=250, losses=12, wins=0)  # drop 0.040, p = 1/4096
    d = decide(rep, GatePolicy(min_gain=0.05, max_drop=0.015, significance="mcnemar"))
    assert not d.promote
    assert any(r.startswith("FAIL old task 'first'") and "p=0.000244" in r for r in d.reasons)
    # significant but within max_drop: still fine
    assert decide(rep, GatePolicy(min_gain=0.05, max_drop=0.05, significance="mcnemar")).promote


def test_bootstrap_significance_agrees_with_mcnemar_and_is_repeatable():
    policy = GatePolicy(min_gain=0.05, max_drop=0.01, significance="bootstrap")
    noisy, clear = paired_report(300, 250, 7, 3), paired_report(300, 250, 12, 0)  # McNemar p = 0.17 and 1/4096
    assert (
        decide(noisy, policy).promote and decide(noisy, policy.model_copy(update={"significance": "mcnemar"})).promote
    )
    assert not decide(noisy, policy.model_copy(update={"significance": "off"})).promote
    d = decide(clear, policy)
    assert not d.promote
    assert d.reasons == decide(clear, policy).reasons  # seeded: the same decision every time
    line = next(r for r in d.reasons if "old task 'first'" in r)
    assert "bootstrap p=0" in line and "drop in [+0.0" in line


def test_significance_without_paired_results_judges_on_scores_alone():
    d = decide(report([("count", True, 0.0, 0.5), ("first", False, 0.9, 0.85)]),
               GatePolicy(min_gain=0.05, max_drop=0.02, significance="mcnemar"))  # fmt: skip
    assert not d.promote
    assert any(r.startswith("FAIL old task 'first'") and "judged on the scores alone" in r for r in d.reasons)


def test_gate_warns_when_an_eval_split_is_too_small_for_the_tolerance():
    small = decide(paired_report(n=40, both=30, losses=0, wins=0), GatePolicy(min_gain=0.05, max_drop=0.05))
    assert small.promote
    warn = [r for r in small.reasons if r.startswith("warn")]
    assert len(warn) == 1 and "40 examples" in warn[0] and "≥ 5 lost examples (0.125)" in warn[0]
    assert "use ≥ 100 eval examples" in warn[0]
    assert small.summary().endswith("(1 warnings)")
    big = decide(paired_report(n=100, both=80, losses=0, wins=0), GatePolicy(min_gain=0.05, max_drop=0.05))
    assert not [r for r in big.reasons if r.startswith("warn")]
