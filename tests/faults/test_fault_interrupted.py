"""Runs interrupted between two steps of the lifecycle, and what the next attempt (a Prefect retry of the step, the
next run, `skillgraft status`) makes of it:

* the store goes away after the champion pointer moved and before the history entry: the retried promote step
  recognises its own write and finishes the promotion (it used to call it a concurrent move and record the live
  champion as "superseded", and the post-promotion check never ran);
* a writer SIGKILLed right after a version's manifest: the version was never gated, so its batch is handed to the
  next run again (it used to count as used: the data was stranded) and `status` lists it as ungated;
* a promoter SIGKILLed after the promotion and before the post-promotion check: `status` says the champion was never
  checked, and the next run (``steps.finish_interrupted``, the flow's first step after registering) checks it first,
  rolling back when the check fails.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from invariants import assert_sound, run_worker, snapshot, status_json
from test_fault_endpoint import LoopbackProxy, Trigger, proxied_store, proxy  # noqa: F401 - fixtures

from skillgraft import steps
from skillgraft.config import SkillgraftConfig
from skillgraft.data import Intake
from skillgraft.evaluate import RegressionReport
from skillgraft.gate import Decision
from skillgraft.refs import VersionRef
from skillgraft.registry import Registry
from skillgraft.store import StoreUnreachable
from skillgraft.store.base import ObjectStore
from skillgraft.store.s3 import S3Store


def candidate(reg: Registry, version: str, parent: str) -> steps.CandidateInfo:
    """What the fine-tune step hands on: the candidate and the champion etag its training started from."""
    _, etag = reg.champion_with_etag()
    return steps.CandidateInfo(
        candidate=VersionRef(model=reg.model, version=version), parent=parent, champion_etag=etag,
        new_tasks=["first"], known_tasks=["first"], trainable_parameters=1, total_parameters=1, seconds=0.0,
        device="cpu", recipe="sa_proj", losses=[], log_every=1,
    )  # fmt: skip


class FailOnceOnHistory:
    """A local store whose first write of history.jsonl fails as an unreachable endpoint would (nothing written)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.url, self.fired = inner, inner.url, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def replace_if(self, key: str, data: bytes, expected: str | None) -> bool:
        if not self.fired and key.endswith("/history.jsonl"):
            self.fired = True
            raise StoreUnreachable(f"cannot reach {self.url} (injected between the pointer write and the history)")
        return self.inner.replace_if(key, data, expected)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_outage_between_pointer_and_history_then_the_retried_promote_step_finishes_the_promotion(
    backend: str, request: pytest.FixtureRequest, demo_registry: Callable[..., Registry]
) -> None:
    if backend == "s3":
        proxy: LoopbackProxy = request.getfixturevalue("proxy")
        store: ObjectStore = request.getfixturevalue("proxied_store")
        faulty: Any = Trigger(store, "/history.jsonl", proxy.stop)  # the endpoint goes away just before the append
    else:
        store = request.getfixturevalue("local_store")
        faulty = FailOnceOnHistory(store)
    reg = demo_registry(store, versions=2, champion="v1")  # v2: gated (promote, against v1), not promoted
    before = snapshot(reg)
    cfg = SkillgraftConfig(store=store.url if isinstance(store, S3Store) else str(store.root))
    cand = candidate(reg, "v2", "v1")
    decision = Decision.model_validate_json(reg.read_attachment("v2", "decision.json"))

    with pytest.raises(StoreUnreachable):  # the first attempt of the step: the pointer moved, the append failed
        steps.promote(faulty, cfg, cand, decision)
    if backend == "s3":
        proxy.start()  # the endpoint is back for Prefect's retry
    reg = Registry(store, "demo", actor="tester@ci")
    assert reg.champion().version == "v2"  # type: ignore[union-attr]  # the move landed
    assert [(e.action, e.version) for e in reg.history()] == [("promote", "v1")]  # its entry did not

    result = steps.promote(faulty, cfg, cand, decision)  # the retry: same inputs, same move id
    assert result.promoted and (result.champion, result.previous) == ("v2", "v1"), result
    history = reg.history()
    assert [(e.action, e.version, e.from_version) for e in history] == [
        ("promote", "v1", None),
        ("promote", "v2", "v1"),
    ]
    assert "superseded" not in {e.action for e in history}
    assert history[-1].model_extra == {} and history[-1].reason.startswith("gate passed vs v1")  # its own entry
    assert reg.unlogged_move() is None
    assert_sound(reg, before)
    # the flow goes on to the post-promotion check, which now runs (and passes) on the real champion
    assert steps.post_promotion_check(store, cfg, "v2").ok

    again = steps.promote(store, cfg, cand, decision)  # a third attempt is as harmless: nothing doubles
    assert again.promoted and len(reg.history()) == 2


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[ObjectStore, str]:
    store = request.getfixturevalue(f"{request.param}_store")
    if isinstance(store, S3Store):
        monkeypatch.setenv("SKILLGRAFT_S3_ENDPOINT_URL", request.getfixturevalue("s3_endpoint"))
        return store, store.url
    return store, str(store.root)


def delta_file(tmp_path: Path, data: bytes) -> list[str]:
    (tmp_path / "delta.safetensors").write_bytes(data)
    return ["--file", f"delta.safetensors={tmp_path / 'delta.safetensors'}"]


def test_writer_killed_after_the_manifest_leaves_an_ungated_version_whose_batch_the_next_run_trains_again(
    backend: tuple[ObjectStore, str], demo_registry: Callable[..., Registry], demo_chain: Any, tmp_path: Path
) -> None:
    store, url = backend
    reg = demo_registry(store, versions=1, champion="v1")
    batch = Intake(store).batches("first")[0]
    proc = run_worker(url, "--kill-at", "before-pointer", "--promote", "--batch", batch.model_dump_json(),
                      *delta_file(tmp_path, demo_chain.versions[1].delta))  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)

    rows = {v.version: v for v in reg.versions(verify=True)}
    assert rows["v2"].status == "complete" and rows["v2"].gated is False  # trained, never gated
    assert reg.manifest("v2").batches == [batch]
    assert steps.untrained_batches(store, "demo") == [batch]  # not stranded: the next run trains on it again
    code, doc = status_json(url)
    assert code == 0 and doc["ungated"] == ["v2"]
    from typer.testing import CliRunner

    from skillgraft.cli import app

    text = CliRunner().invoke(app, ["status", "--store", url])
    assert "v2 ungated:" in " ".join(text.stdout.split()) and "trains on its data again" in " ".join(
        text.stdout.split()
    )

    reg.attach("v2", "decision.json", b'{"promote": false}')  # once a gate decided (even a reject), the batch is used
    assert steps.untrained_batches(store, "demo") == []
    assert status_json(url)[1]["ungated"] == []


def test_promoter_killed_before_the_post_promotion_check_is_flagged_and_the_next_run_checks_it_first(
    backend: tuple[ObjectStore, str], demo_registry: Callable[..., Registry], demo_chain: Any, tmp_path: Path
) -> None:
    store, url = backend
    reg = demo_registry(store, versions=1, champion="v1")
    reg.record("post-check-passed", "v1", reason="smoke scores match the gate")
    proc = run_worker(
        url, "--kill-at", "after-promote", "--promote", *delta_file(tmp_path, demo_chain.versions[1].delta)
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    reg.attach("v2", "metrics.json", demo_chain.versions[1].metrics)  # what its gate scored (the smoke baseline)

    assert reg.unchecked_champion().version == "v2"  # type: ignore[union-attr]
    code, doc = status_json(url)
    assert code == 0 and doc["champion"]["version"] == "v2" and doc["champion_unchecked"] is True
    from typer.testing import CliRunner

    from skillgraft.cli import app

    text = " ".join(CliRunner().invoke(app, ["status", "--store", url]).stdout.split())
    assert "champion v2 was never checked after promotion" in text and "skillgraft check" in text

    resumed = steps.finish_interrupted(store, SkillgraftConfig(store=url))  # what the next run does first
    assert not resumed.stop and resumed.champion == "v2"
    assert resumed.notes == [
        "champion v2 had not been checked after its promotion (an earlier run stopped): checked now, passed"
    ]
    assert [(e.action, e.version) for e in reg.history()][-2:] == [("promote", "v2"), ("post-check-passed", "v2")]
    assert status_json(url)[1]["champion_unchecked"] is False
    assert steps.finish_interrupted(store, SkillgraftConfig(store=url)).notes == []  # done once, not every run


def test_an_unchecked_champion_that_fails_its_late_check_is_rolled_back_before_anything_trains(
    local_store: ObjectStore, demo_registry: Callable[..., Registry], demo_chain: Any, tmp_path: Path
) -> None:
    url = str(local_store.root)  # type: ignore[attr-defined]
    reg = demo_registry(local_store, versions=1, champion="v1")
    reg.record("post-check-passed", "v1", reason="smoke scores match the gate")
    proc = run_worker(
        url, "--kill-at", "after-promote", "--promote", *delta_file(tmp_path, demo_chain.versions[1].delta)
    )
    assert proc.returncode == -signal.SIGKILL
    report = RegressionReport.model_validate_json(demo_chain.versions[1].metrics)
    for score in report.candidate_scores.values():
        score.correct = [1] * len(score.correct)  # gate scores the stored weights don't reproduce
    reg.attach("v2", "metrics.json", report.model_dump_json().encode())

    resumed = steps.finish_interrupted(local_store, SkillgraftConfig(store=url))
    assert not resumed.stop and resumed.champion == "v1"
    assert "the check run now failed" in resumed.notes[0] and "rolled back to v1" in resumed.notes[0]
    assert reg.champion().version == "v1"  # type: ignore[union-attr]
    assert [(e.action, e.version) for e in reg.history()][-3:] == [
        ("promote", "v2"), ("post-check-failed", "v2"), ("rollback", "v1"),
    ]  # fmt: skip
    assert reg.unchecked_champion() is None  # a rollback returns to a checked former champion
