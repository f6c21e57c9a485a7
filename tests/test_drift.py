"""Output drift, built for real on the demo model: teach it its old tasks, then retrain it on the numeric ``count``
task with a learning rate high enough that it starts answering everything with numbers. The probe must see it, the
gate must reject it with the probe's value in its reasons, and the drift watch must stop it within budget."""

from __future__ import annotations

import pytest
import torch

from skillgraft import demo
from skillgraft.evaluate import EvalTask, run_suite
from skillgraft.gate import GatePolicy, decide
from skillgraft.probe import answer_token_ids, measure, number_mass, number_token_ids
from skillgraft.recipes import Full, SAProj
from skillgraft.refs import TrainingRecord
from skillgraft.train import (
    DriftWatch,
    TrainConfig,
    TrainingError,
    fine_tune,
    mix_replay,
)

OLD = [ex for t in demo.OLD_TASKS for ex in demo.generate(t, 300, seed=1)]
NEW = demo.generate("count", 200, seed=1)
PROBE = [ex.prompt for t in demo.OLD_TASKS for ex in demo.generate(t, 8, seed=7)]
DRIFTING = dict(learning_rate=1e-2, batch_size=16, steps=60)  # no replay, high lr: numbers everywhere


@pytest.fixture(scope="module")
def tokenizer():
    return demo.build_tokenizer()


@pytest.fixture(scope="module")
def champion_state(tokenizer):
    """The demo model taught its old tasks (first, last, max) with a short full fine-tune (≈ 10 s on one thread)."""
    torch.set_num_threads(1)
    cfg = TrainConfig(steps=300, learning_rate=2e-3, batch_size=32, schedule="cosine", progress=False, log_every=50)
    tuned = fine_tune(demo.build_model(tokenizer), tokenizer, OLD, Full(), cfg)
    return {k: v.clone() for k, v in tuned.model.state_dict().items()}


def champion(tokenizer, state):
    model = demo.build_model(tokenizer)
    model.load_state_dict(state)
    return model.eval()


def train(tokenizer, state, examples, **knobs):
    cfg = TrainConfig(progress=False, log_every=5, **{**DRIFTING, **knobs})
    return fine_tune(champion(tokenizer, state), tokenizer, examples, SAProj(), cfg, probe_prompts=PROBE,
                     new_examples=NEW[:64])  # fmt: skip


def test_probe_token_sets_and_a_model_against_itself(tokenizer, champion_state):
    digits = set(tokenizer.convert_tokens_to_ids(list(demo.DIGITS)))
    assert set(number_token_ids(tokenizer)) == digits | {tokenizer.convert_tokens_to_ids("first")}  # an ordinal
    assert set(answer_token_ids(tokenizer, [ex.answer for ex in NEW])) == set(tokenizer.convert_tokens_to_ids(
        sorted({ex.answer for ex in NEW})))  # fmt: skip
    model = champion(tokenizer, champion_state)
    same = measure(model, model, tokenizer, PROBE, answer_ids=answer_token_ids(tokenizer, ["3"]))
    assert same.kl == pytest.approx(0.0, abs=1e-6) and same.delta == 0.0 and same.answer_delta == 0.0
    assert same.champion == pytest.approx(number_mass(model, tokenizer, PROBE))
    assert 0.0 < same.champion < 0.05  # the taught model answers old prompts with letters


def test_gate_rejects_a_retrain_that_drifts_toward_numbers_with_the_probe_value_in_its_reasons(
    tokenizer, champion_state
):
    champ = champion(tokenizer, champion_state)
    drifted = train(tokenizer, champion_state, NEW).model
    gentle = train(tokenizer, champion_state, mix_replay(NEW, OLD, 0.5, seed=0), learning_rate=3e-3, steps=100).model
    tasks = [EvalTask(t, "exact_match", 4, demo.generate(t, 60, seed=99), new=t == "count")
             for t in (*demo.OLD_TASKS, "count")]  # fmt: skip

    report = run_suite(champ, drifted, tokenizer, tasks, champion_label="v1", candidate_label="v2", probe_prompts=20)
    p = report.probe
    assert p is not None and p.prompts == 60
    assert p.champion < 0.05 and p.delta > 0.15  # real drift: number mass on old prompts went up several-fold
    assert p.answer_delta > 0.1 and p.kl > 1.0  # the answer-token mass and the KL see it too
    assert report.row("count").delta > 0.2  # and it did learn to count

    policy = GatePolicy(min_gain=0.05, max_drop=0.05, max_bias_increase=0.05)
    d = decide(report, policy, required_tasks=list(demo.OLD_TASKS))
    assert not d.promote
    line = next(r for r in d.reasons if "number-token mass" in r)
    assert line.startswith("FAIL") and f"{p.candidate:.4f}" in line and f"{p.delta:+.4f}" in line
    assert f"{p.delta:+.4f}" in d.summary()
    # the probe alone rejects it: with old-task drops tolerated, only the bias limit fails
    lenient = decide(report, policy.model_copy(update={"max_drop": 1.0}))
    assert not lenient.promote and [r for r in lenient.reasons if r.startswith("FAIL")] == [line]

    # a retrain with replay and a gentler rate moves number mass far less and passes the same limit
    calm = run_suite(champ, gentle, tokenizer, tasks, champion_label="v1", candidate_label="v3", probe_prompts=20)
    assert calm.probe.delta < 0.05
    assert decide(calm, policy.model_copy(update={"max_drop": 1.0})).promote


def test_drift_watch_stops_a_drifting_run_and_keeps_a_checkpoint_within_budget(tokenizer, champion_state):
    budget = 0.05
    watch = DriftWatch(metric="number_mass", budget=budget, every=2)
    out = train(tokenizer, champion_state, NEW, learning_rate=3e-3, drift_watch=watch)
    curve = out.record.drift
    assert curve is not None and curve.stopped_at is not None and curve.stopped_at < 60
    assert [pt.step for pt in curve.points] == list(range(0, curve.stopped_at + 1, 2))
    assert curve.points[-1].drift > budget and not curve.points[-1].within_budget
    kept = next(pt for pt in curve.points if pt.step == curve.kept_step)
    assert curve.kept_step > 0 and kept.within_budget and kept.drift <= budget
    assert kept.new_loss < curve.points[0].new_loss  # it learned something before it had to stop
    assert "over budget" in curve.reason and f"kept step {curve.kept_step}" in curve.reason

    # measured again from scratch: the model returned is the kept checkpoint, within budget
    start = champion(tokenizer, champion_state)
    again = measure(start, out.model, tokenizer, PROBE)
    assert again.delta <= budget
    assert again.candidate == pytest.approx(kept.number_mass, abs=1e-5)

    # the same run without the watch really does drift past the budget
    unwatched = train(tokenizer, champion_state, NEW, learning_rate=3e-3)
    assert measure(start, unwatched.model, tokenizer, PROBE).delta > 3 * budget

    # the curve is stored with the version: it survives the manifest's JSON
    assert TrainingRecord.model_validate_json(out.record.model_dump_json()).drift == curve


def test_drift_watch_within_budget_runs_to_the_end_and_keeps_the_lowest_loss(tokenizer, champion_state):
    watch = DriftWatch(metric="kl", budget=100.0, every=5)
    out = train(tokenizer, champion_state, NEW, learning_rate=3e-3, steps=20, drift_watch=watch)
    curve = out.record.drift
    assert curve.stopped_at is None and [pt.step for pt in curve.points] == [0, 5, 10, 15, 20]
    assert all(pt.within_budget for pt in curve.points) and curve.points[0].kl == 0.0
    best = min(curve.points, key=lambda pt: (pt.new_loss, -pt.step))
    assert curve.kept_step == best.step and curve.kept_step > 0


def test_drift_watch_needs_probe_prompts(tokenizer):
    cfg = TrainConfig(steps=2, progress=False, drift_watch=DriftWatch(budget=0.1))
    with pytest.raises(TrainingError, match="no probe prompts"):
        fine_tune(demo.build_model(tokenizer), tokenizer, NEW, SAProj(), cfg)
