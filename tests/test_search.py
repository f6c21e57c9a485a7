"""skillgraft.search on the demo model, in process: the ladder and α interpolation give distinct candidates for every
recipe (LoRA rungs are merged before they are scaled), the choice honours the checks, and the record says why."""

from __future__ import annotations

import pytest
import torch

from skillgraft import demo
from skillgraft.evaluate import EvalTask
from skillgraft.recipes import parse_recipe
from skillgraft.schemas.gate import GatePolicy
from skillgraft.search import SearchConfig, run, selection_split
from skillgraft.train import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("recipe", ["sa_proj", "lora"])
def test_alpha_scales_each_rung_and_the_kept_candidate_is_the_best_that_passes(recipe):
    tokenizer = demo.build_tokenizer()
    model = demo.build_model(tokenizer)
    parent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    new = demo.generate("first", 120, seed=0)
    guard = EvalTask(
        name="g", metric="exact_match", max_new_tokens=4, examples=demo.generate("last", 20, seed=1), guard=True
    )
    probe = [ex.prompt for ex in demo.generate("max", 16, seed=2)]
    search = SearchConfig(mode="on", learning_rates=[3e-3, 1e-3], steps=20, alphas=[1.0, 0.5], budget_s=None)
    policy = GatePolicy(max_drop=0.05, guard_max_drop=1.0)  # no drift limit, any guard drop: every candidate passes
    chosen, record, training = run(
        model, tokenizer, parent, train_examples=new, replay=[], checks=[guard],
        new_task=EvalTask(name="first", metric="exact_match", max_new_tokens=4, examples=[]), probe_prompts=probe,
        policy=policy, search=search, recipe=parse_recipe(recipe), train_cfg=TrainConfig(batch_size=8, progress=False),
        replay_fraction=0.0, eval_batch_size=32,
    )  # fmt: skip
    assert [(r.learning_rate, r.alpha) for r in record.rungs] == [(3e-3, 1.0), (3e-3, 0.5), (1e-3, 1.0), (1e-3, 0.5)]
    assert all(r.passed for r in record.rungs) and record.selection_rows >= 2
    for lr in (3e-3, 1e-3):  # half the delta drifts less than the whole of it
        full, half = (r for r in record.rungs if r.learning_rate == lr)
        assert 0 < half.kl < full.kl
    best = max(record.rungs, key=lambda r: (r.learned, r.alpha))
    assert record.rungs[record.chosen] == best and training.learning_rate == best.learning_rate
    state = chosen.state_dict()
    assert any(not torch.equal(state[k], parent[k]) for k in parent)  # the chosen weights, not the champion's


def test_nothing_passing_keeps_the_least_drift_and_says_so():
    tokenizer = demo.build_tokenizer()
    model = demo.build_model(tokenizer)
    parent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    search = SearchConfig(mode="on", learning_rates=[3e-3], steps=10, alphas=[1.0, 0.5], budget_s=None)
    policy = GatePolicy(max_drop=None)  # the gate refuses everything without a regression limit, so the search does
    _, record, _ = run(
        model, tokenizer, parent, train_examples=demo.generate("first", 60, seed=0), replay=[], checks=[],
        new_task=EvalTask(name="first", metric="exact_match", max_new_tokens=4, examples=[]),
        probe_prompts=[ex.prompt for ex in demo.generate("max", 8, seed=2)], policy=policy, search=search,
        recipe=parse_recipe("sa_proj"), train_cfg=TrainConfig(batch_size=8, progress=False), replay_fraction=0.0,
        eval_batch_size=32,
    )  # fmt: skip
    assert not any(r.passed for r in record.rungs)
    assert all(r.why == ["no regression limit (max_drop) configured: refusing to promote"] for r in record.rungs)
    assert record.rungs[record.chosen].kl == min(r.kl for r in record.rungs)
    assert record.reason.startswith("no candidate kept every guard") and "the gate decides" in record.reason


def test_selection_rows_are_held_back_from_a_train_split_made_by_the_same_prompt_hash():
    from skillgraft.data.split import assign_sides

    rows = demo.generate("first", 300, seed=4)
    train = [ex for ex, side in zip(rows, assign_sides(rows, 0.2)) if side == "train"]
    kept, held = selection_split(train, 0.2)
    assert 0.1 * len(train) < len(held) < 0.3 * len(train)  # the salted hash is independent of the intake's split
    assert {ex.prompt for ex in kept}.isdisjoint(ex.prompt for ex in held) and len(kept) + len(held) == len(train)
