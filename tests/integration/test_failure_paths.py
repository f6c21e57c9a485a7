"""Failure paths are visible in the UI too: a rejected batch and a rejected candidate each leave an artifact saying what
happened and what to do, and the run's name says so. (The automatic rollback's artifact is checked in tests/test_flow.py.)

These runs execute in the test process against the session's Prefect server, on copies of its bootstrapped store.
"""

from __future__ import annotations

import shutil

import pytest
import yaml
from flow_states import assert_named_after_outcome
from prefect.client.orchestration import get_client

from skillgraft import demo
from skillgraft.data import Intake
from skillgraft.registry import Registry
from skillgraft.store import LocalStore

from .conftest import MODEL, Service, artifacts_of

pytestmark = pytest.mark.slow


def own_copy(service: Service, tmp_path, **gate) -> tuple[LocalStore, str]:
    """A copy of the service's store (demo model, v1 champion at least) and a config pointing at it."""
    shutil.copytree(service.store, tmp_path / "store")
    cfg = yaml.safe_load(service.config.read_text())
    cfg["store"] = str(tmp_path / "store")
    cfg["gate"].update(gate)
    path = tmp_path / "skillgraft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return LocalStore(tmp_path / "store"), str(path)


def run(**params):
    from flows.retrain import retrain

    state = retrain(return_state=True, **params)
    assert state.is_completed(), state
    outcome = state.result()
    assert_named_after_outcome(state, outcome)  # what the UI's run list shows
    return outcome, state.state_details.flow_run_id


def flow_run_name(flow_run_id) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).name


def test_a_rejected_batch_is_named_in_the_run_and_explained_with_what_to_fix(service: Service, tmp_path):
    store, config = own_copy(service, tmp_path)
    bad = tmp_path / "count-bad.jsonl"
    bad.write_text('{"prompt": "count : a b", "answer": "two"}\n{"prompt": "count : a b c", "answer": "3"}\n')
    Intake(store).submit("count", bad)
    outcome, run_id = run(config=config, task="count")
    assert outcome.status == "data-rejected" and outcome.candidate is None
    assert flow_run_name(run_id) == f"{MODEL}-count-data-rejected"
    [location] = [k.rsplit("/", 1)[0] + "/" for k in store.keys("quarantine/count/") if k.endswith("/count-bad.jsonl")]
    assert any(location in note for note in outcome.notes)
    arts = artifacts_of(run_id)
    rejected = arts[f"{MODEL}-data-rejected"].data
    assert "`count-bad.jsonl` (task `count`)" in rejected and f"Moved to `{location}`" in rejected
    assert "count-bad.jsonl:1:" in rejected  # the problem, with its line
    assert "## What to do" in rejected and "skillgraft submit" in rejected
    assert Registry(store, MODEL).champion().version == Registry(LocalStore(service.store), MODEL).champion().version


def test_a_rejected_candidate_leaves_the_champion_and_the_decision_says_what_to_try(service: Service, tmp_path):
    store, config = own_copy(service, tmp_path, min_gain=1.5)  # no candidate can gain 150 points
    champion = Registry(store, MODEL).champion().version
    rows = demo.generate("sum", 120, seed=7)
    Intake(store).submit("sum", demo.write_jsonl(tmp_path / "sum-7.jsonl", rows))
    outcome, run_id = run(config=config, task="sum")
    assert outcome.status == "rejected" and outcome.champion == champion
    assert flow_run_name(run_id) == f"{MODEL}-sum-rejected"
    decision = artifacts_of(run_id)[f"{MODEL}-decision"]
    assert decision.description == f"reject {outcome.candidate} (champion {champion})"
    assert decision.data.startswith("# Decision: reject")
    assert f"The champion is unchanged (`{champion}`)" in decision.data
    assert "min_gain" in decision.data and "`gate` in skillgraft.yaml (now min_gain 1.5" in decision.data
    assert Registry(store, MODEL).champion().version == champion
