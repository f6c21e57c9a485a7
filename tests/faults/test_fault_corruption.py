"""Objects changed or removed behind the registry's back: a corrupted model file, a manifest deleted by hand.

Such a version is never loaded or promoted (nor any version built on it), `skillgraft status` reports it, and a
champion that gets corrupted after its promotion fails the post-promotion check and is rolled back automatically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from invariants import assert_sound, snapshot, status_json
from typer.testing import CliRunner

from skillgraft import steps
from skillgraft.cli import app
from skillgraft.config import SkillgraftConfig
from skillgraft.evaluate import RegressionReport
from skillgraft.refs import Manifest
from skillgraft.registry import Registry, VersionCorrupt, VersionNotValid
from skillgraft.store.base import ObjectStore

DELTA = "models/demo/versions/{}/delta.safetensors"


def overwrite(store: ObjectStore, key: str, data: bytes) -> None:
    """Change an object behind the registry's back (bit rot, a bad manual copy)."""
    store.delete(key)
    store.put_new(key, data)


def flip_a_byte(store: ObjectStore, key: str) -> None:
    data = bytearray(store.get(key))
    data[-1] ^= 0xFF  # same size: only the sha256 can tell
    overwrite(store, key, bytes(data))


def test_corrupted_version_and_its_children_are_not_loadable_or_promotable_and_status_reports_them(
    store: ObjectStore, store_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(store, versions=3, champion="v1")
    flip_a_byte(store, DELTA.format("v2"))
    before = snapshot(reg)

    code, doc = status_json(store_url)
    assert code == 0 and doc["champion_ok"] is True
    rows = {v["version"]: v for v in doc["versions"]}
    assert [rows[v]["status"] for v in ("v1", "v2", "v3")] == ["complete", "corrupt", "corrupt"]
    assert rows["v2"]["problems"][0].startswith("delta.safetensors: sha256 ")
    assert rows["v3"]["problems"] == ["parent v2 is corrupt: v3 can't be loaded"]

    for version in ("v2", "v3"):
        with pytest.raises(VersionCorrupt, match="sha256"):
            steps.load_version(reg, version)
        with pytest.raises(VersionCorrupt):
            reg.promote(version, reason="must be refused", force=True)
    result = CliRunner().invoke(app, ["promote", "v3", "--force", "--store", store_url, "--no-check"])
    assert result.exit_code == 5, result.output
    assert "builds on v2" in result.stderr and "sha256" in result.stderr
    assert reg.champion().version == "v1"  # type: ignore[union-attr]
    assert_sound(reg, before)


def test_champion_corrupted_after_promotion_fails_the_post_promotion_check_and_is_rolled_back(
    store: ObjectStore, store_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(store, versions=2, champion="v2")
    cfg = SkillgraftConfig(store=store_url)
    assert steps.post_promotion_check(store, cfg, "v2").ok  # the same check passes on the intact champion

    flip_a_byte(store, DELTA.format("v2"))
    before = snapshot(reg)
    check = steps.post_promotion_check(store, cfg, "v2")
    assert not check.ok and "could not be loaded back" in check.reasons[0] and "sha256" in check.reasons[0]
    pointer = steps.auto_rollback(store, cfg, check, "v1")

    assert (pointer.version, reg.champion().version) == ("v1", "v1")  # type: ignore[union-attr]
    last = reg.history()[-1]
    assert (last.action, last.version, last.from_version) == ("rollback", "v1", "v2")
    assert last.reason.startswith("automatic rollback: post-promotion check of v2 failed: champion v2 could not")
    code, doc = status_json(store_url)
    assert code == 0 and doc["champion"]["version"] == "v1"
    assert [v["status"] for v in doc["versions"]] == ["complete", "corrupt"]
    assert_sound(reg, before)


def test_manifest_deleted_by_hand_makes_the_version_incomplete_and_a_champion_without_one_is_flagged(
    store: ObjectStore, store_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(store, versions=3, champion="v2")
    store.delete("models/demo/versions/v3/manifest.json")
    rows = {v.version: v for v in reg.versions(verify=True)}
    assert rows["v3"].status == "incomplete" and "no manifest.json" in rows["v3"].problems[0]
    assert rows["v3"].files == ["decision.json", "delta.safetensors", "metrics.json"]  # nothing else was touched
    with pytest.raises(VersionNotValid, match="incomplete"):
        steps.load_version(reg, "v3")
    with pytest.raises(VersionNotValid):
        reg.promote("v3", reason="must be refused", force=True)

    store.delete("models/demo/versions/v2/manifest.json")  # now the champion's own manifest
    before = snapshot(reg)
    code, doc = status_json(store_url)
    assert code == 5 and doc["champion_ok"] is False
    assert doc["champion_problem"].startswith("champion v2 is incomplete: no manifest.json")
    check = steps.post_promotion_check(store, SkillgraftConfig(store=store_url), "v2")
    assert not check.ok and "incomplete" in check.reasons[0]

    result = CliRunner().invoke(app, ["rollback", "--store", store_url, "--reason", "v2 lost its manifest"])
    assert result.exit_code == 0, result.output
    assert reg.champion().version == "v1"  # type: ignore[union-attr]
    assert status_json(store_url)[0] == 0
    assert_sound(reg, before)


def test_a_champion_that_does_not_reproduce_its_gate_scores_fails_the_smoke_check_and_is_rolled_back(
    local_store: ObjectStore, demo_registry: Callable[..., Registry], demo_chain: Any
) -> None:
    """The smoke evaluation, not only the checksums: a version whose stored gate scores (metrics.json) its weights don't
    reproduce after the load-back fails the check."""
    reg = demo_registry(local_store, versions=1, champion="v1")
    manifest = Manifest(model="demo", version="pending", parent="v1", base=demo_chain.base, recipe={"kind": "sa_proj"},
                        tasks=demo_chain.tasks)  # fmt: skip
    reg.create_version({"delta.safetensors": demo_chain.versions[1].delta}, manifest)
    report = RegressionReport.model_validate_json(demo_chain.versions[1].metrics)
    for score in report.candidate_scores.values():
        score.correct = [1] * len(score.correct)  # the gate "saw" every answer right
    reg.attach("v2", "metrics.json", report.model_dump_json().encode())
    reg.promote("v2", reason="gate passed")
    check = steps.post_promotion_check(local_store, SkillgraftConfig(store=str(local_store.root)), "v2")
    assert not check.ok and check.reasons == ["task first: smoke score 0.000 vs 1.000 at the gate"]
    assert steps.auto_rollback(local_store, SkillgraftConfig(), check, "v1").version == "v1"
