"""The retrain flow end to end under Prefect's test harness: real store, real training, real artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from flow_states import assert_named_after_outcome
from prefect.client.orchestration import get_client

from skillgraft import demo
from skillgraft.data import Intake
from skillgraft.registry import Registry
from skillgraft.store import LocalStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


def write_config(tmp: Path, store: Path, **gate) -> Path:
    cfg = {
        "store": str(store),
        "model": "demo",
        "base": demo.BASE_SOURCE,
        "train": {"steps": 40, "learning_rate": 1e-3, "batch_size": 16, "progress": False},
        "bootstrap_train": {
            "steps": 300,
            "learning_rate": 3e-3,
            "batch_size": 32,
            "schedule": "cosine",
            "progress": False,
        },
        "gate": {"min_gain": 0.05, "max_drop": 0.05, **gate},
        "suite": {"max_eval_examples": 64, "probe_prompts": 16, "smoke_examples": 16},
    }
    path = tmp / f"skillgraft-{len(list(tmp.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def land(store: LocalStore, tmp: Path, task: str, rows: int, seed: int = 0) -> None:
    intake = Intake(store)
    for spec in demo.SPECS.values():
        intake.register_task(spec)
    examples = demo.generate(task, rows, seed=seed, exclude=demo.known_prompts(intake, task))
    intake.submit(task, demo.write_jsonl(tmp / f"{task}-{seed}.jsonl", examples))


def artifacts_of(flow_run_id) -> dict[str, object]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


def run_flow(**params):
    from flows.retrain import retrain

    state = retrain(return_state=True, **params)
    assert state.is_completed(), state
    outcome = state.result()
    assert_named_after_outcome(state, outcome)  # what the UI's run list shows
    return outcome, state.state_details.flow_run_id


@pytest.fixture(scope="module")
def bootstrapped(harness, tmp_path_factory):
    """A store whose demo model was bootstrapped (v1 champion) by the flow itself."""
    tmp = tmp_path_factory.mktemp("flow")
    store_dir = tmp / "store"
    store = LocalStore(store_dir)
    for task in demo.OLD_TASKS:
        land(store, tmp, task, 400)
    outcome, run_id = run_flow(config=str(write_config(tmp, store_dir)), bootstrap=True)
    return tmp, store_dir, outcome, run_id


def test_bootstrap_run_teaches_the_old_tasks_and_promotes_v1(bootstrapped):
    tmp, store_dir, outcome, run_id = bootstrapped
    assert outcome.status == "promoted" and outcome.champion == "v1"
    assert {r.task for r in outcome.report.rows} == set(demo.OLD_TASKS)
    assert all(r.new and r.champion < 0.2 < r.candidate for r in outcome.report.rows)
    reg = Registry(LocalStore(store_dir), "demo")
    assert reg.champion().version == "v1"
    assert [h.action for h in reg.history()] == ["promote", "post-check-passed"]
    assert reg.manifest("v1").flow_run_id == str(run_id)  # the lineage names the run that trained it
    arts = artifacts_of(run_id)
    assert {"demo-data-validation", "demo-training", "demo-regression", "demo-decision"} <= set(arts)
    table = json.loads(arts["demo-regression"].data)
    assert sorted(row["task"] for row in table) == sorted(demo.OLD_TASKS)
    assert "PROMOTE" in arts["demo-decision"].data.upper()


def test_rejected_candidate_leaves_the_champion_and_explains_why(bootstrapped):
    tmp, store_dir, _, _ = bootstrapped
    land(LocalStore(store_dir), tmp, "count", 200, seed=1)
    cfg = write_config(tmp, store_dir, min_gain=1.5)  # no candidate can gain 150 points: the gate must reject
    outcome, run_id = run_flow(config=str(cfg), task="count")
    assert outcome.status == "rejected" and outcome.champion == "v1" and outcome.candidate == "v2"
    assert any(r.startswith("FAIL new task 'count'") for r in outcome.decision.reasons)
    reg = Registry(LocalStore(store_dir), "demo")
    assert reg.champion().version == "v1"
    assert reg.history()[-1].action == "reject" and reg.history()[-1].version == "v2"
    stored = json.loads(reg.read_attachment("v2", "decision.json"))
    assert stored["promote"] is False and stored["champion"] == "v1" and stored["candidate"] == "v2"
    arts = artifacts_of(run_id)
    table = {row["task"]: row for row in json.loads(arts["demo-regression"].data)}
    assert set(table) == {*demo.OLD_TASKS, "count"} and table["count"]["kind"] == "new"
    assert table["count"]["pass"] is False
    assert "REJECT" in arts["demo-decision"].data


def test_promoted_candidate_becomes_champion_then_rollback_is_recorded(bootstrapped):
    tmp, store_dir, _, _ = bootstrapped
    land(LocalStore(store_dir), tmp, "count", 200, seed=2)
    cfg = write_config(tmp, store_dir, min_gain=0.0, max_drop=1.0)  # accept any candidate
    outcome, _ = run_flow(config=str(cfg), task="count")
    assert outcome.status == "promoted"
    reg = Registry(LocalStore(store_dir), "demo")
    new = outcome.champion
    assert reg.champion().version == new and reg.champion().previous == "v1"
    assert "count" in reg.manifest(new).tasks
    pointer = reg.rollback(reason="test: back to v1")
    assert pointer.version == "v1"
    assert [h.action for h in reg.history()][-3:] == ["promote", "post-check-passed", "rollback"]


def test_corrupted_champion_fails_the_post_promotion_check_and_is_rolled_back(bootstrapped, monkeypatch):
    tmp, store_dir, _, _ = bootstrapped
    store = LocalStore(store_dir)
    land(store, tmp, "count", 200, seed=3)
    real_promote = Registry.promote

    def promote_then_rot(self, version, **kw):
        pointer = real_promote(self, version, **kw)
        # bit rot at rest, right after the pointer moved: the delta object no longer matches its manifest
        path = store.root / "models" / "demo" / "versions" / version / "delta.safetensors"
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        return pointer

    monkeypatch.setattr(Registry, "promote", promote_then_rot)
    before = Registry(store, "demo").champion().version
    outcome, run_id = run_flow(config=str(write_config(tmp, store_dir, min_gain=0.0, max_drop=1.0)), task="count")
    assert outcome.status == "rolled-back"
    assert outcome.champion == before
    assert any("could not be loaded back" in n for n in outcome.notes)
    reg = Registry(store, "demo")
    assert reg.champion().version == before
    assert [h.action for h in reg.history()][-3:] == ["promote", "post-check-failed", "rollback"]
    assert "post-promotion check" in reg.history()[-1].reason
    assert "demo-rollback" in artifacts_of(run_id)


def test_flows_take_s3_credentials_from_a_prefect_block(harness, s3_endpoint, s3_bucket, monkeypatch):
    from prefect_aws import AwsClientParameters, AwsCredentials

    from skillgraft.config import SkillgraftConfig
    from skillgraft.store.s3 import S3Store
    from tasks.storage import store_for

    AwsCredentials(
        aws_access_key_id="block-key", aws_secret_access_key="block-secret", region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=s3_endpoint),
    ).save("skillgraft-test", overwrite=True)  # fmt: skip
    for var in ("SKILLGRAFT_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)  # the endpoint must come from the block
    store = store_for(
        SkillgraftConfig(store=f"s3://{s3_bucket}/team", credentials_block="aws-credentials/skillgraft-test")
    )
    assert isinstance(store, S3Store) and store.endpoint == s3_endpoint
    store.put_new("hello.txt", b"from the block")
    assert store.get("hello.txt") == b"from the block"
    with pytest.raises(ValueError, match="not s3://"):
        store_for(SkillgraftConfig(store="/tmp/x", credentials_block="aws-credentials/skillgraft-test"))


def test_gpu_steps_take_turns_on_the_accelerator_slot_and_give_it_back(bootstrapped, monkeypatch):
    from prefect.concurrency.sync import concurrency

    from deployments.serve import ensure_gpu_slot
    from flows.retrain import retrain

    tmp, store_dir, _, _ = bootstrapped
    store = LocalStore(store_dir)
    monkeypatch.setenv("SKILLGRAFT_GPU_SLOT", "")  # restored after the test: ensure_gpu_slot sets it for served runs
    assert ensure_gpu_slot("sg-test-gpu", 1) == 1
    assert ensure_gpu_slot("sg-test-gpu", 5) == 1  # an existing limit is left as it is
    # Prefect takes a couple of seconds to hand over a slot just given back: wait long enough for that, not for a run
    monkeypatch.setenv("SKILLGRAFT_GPU_SLOT_TIMEOUT", "8")
    champion = Registry(store, "demo").champion().version
    land(store, tmp, "count", 150, seed=4)
    cfg = str(write_config(tmp, store_dir))

    with concurrency("sg-test-gpu", occupy=1):  # another run holds the GPU
        state = retrain(return_state=True, config=cfg, task="count")
    assert state.is_failed()
    assert "fine-tune: the accelerator slot 'sg-test-gpu' stayed taken for 8 s" in str(
        state.result(raise_on_failure=False)
    )
    assert Registry(store, "demo").champion().version == champion  # nothing trained, nothing moved

    outcome, _ = run_flow(config=cfg, task="count")  # the slot is free: the batch accepted above is trained now
    assert outcome.status in ("promoted", "rejected") and outcome.tasks == ["count"]
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("sg-test-gpu").active_slots == 0  # given back

    monkeypatch.setenv("SKILLGRAFT_GPU_SLOT", "sg-no-such-limit")
    land(store, tmp, "count", 150, seed=5)
    state = retrain(return_state=True, config=cfg, task="count")
    assert state.is_failed() and "prefect gcl create sg-no-such-limit" in str(state.result(raise_on_failure=False))


def test_a_gpu_slot_name_that_is_not_a_safe_name_is_refused_before_anything_starts(capsys):
    from deployments.serve import parse_args

    with pytest.raises(SystemExit) as stopped:
        parse_args(["--gpu-slot", "GPU 0"])
    assert stopped.value.code == 2 and "invalid GPU slot name 'GPU 0'" in capsys.readouterr().err
    assert parse_args(["--gpu-slot", "gpu-0"]).gpu_slot == "gpu-0"
