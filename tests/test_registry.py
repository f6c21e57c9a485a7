"""The registry on both backends (LocalStore in tmp_path, S3Store on moto): versions, champion, history."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from skillgraft.names import InvalidName
from skillgraft.refs import BaseRef, Manifest
from skillgraft.registry import (
    AttachmentExists,
    BaseMismatch,
    FileNotInVersion,
    ModelNotFound,
    NoPreviousChampion,
    PromotionConflict,
    Registry,
    RegistryError,
    VersionCorrupt,
    VersionNotFound,
    VersionNotValid,
    default_actor,
)
from skillgraft.store.base import KeyExists, ObjectStore

BASE = BaseRef(source="builtin:test", sha256="0" * 64, model_type="llama")


def manifest(parent: str | None = None) -> Manifest:
    return Manifest(model="demo", version="pending", parent=parent, base=BASE, recipe={"kind": "sa_proj"})


@pytest.fixture
def registry(store: ObjectStore) -> Registry:
    reg = Registry(store, "demo", actor="tester@ci")
    reg.init(BASE)
    return reg


def add_version(reg: Registry, content: bytes = b"delta", parent: str | None = None) -> str:
    return reg.create_version({"delta.safetensors": content, "config.json": b"{}"}, manifest(parent)).version


def overwrite(store: ObjectStore, key: str, data: bytes) -> None:
    """Change an object behind the registry's back (bit rot, a bad manual copy)."""
    store.delete(key)
    store.put_new(key, data)


def actions(reg: Registry) -> list[tuple[str, str]]:
    return [(e.action, e.version) for e in reg.history()]


# --- model ----------------------------------------------------------------------------------------------------------


def test_init_is_idempotent_for_the_same_base_and_refuses_another(registry: Registry, store: ObjectStore) -> None:
    assert registry.init(BASE.model_copy(update={"source": "/moved/dir"})).base.source == "builtin:test"
    info = registry.info()
    assert info is not None and info.name == "demo" and info.base == BASE
    with pytest.raises(BaseMismatch, match="Nothing was changed"):
        registry.init(BASE.model_copy(update={"sha256": "1" * 64}))
    assert registry.info() == info
    assert Registry(store, "other").info() is None


def test_create_version_needs_a_registered_model_and_its_base(store: ObjectStore) -> None:
    reg = Registry(store, "demo", actor="t")
    with pytest.raises(ModelNotFound, match=re.escape("Registry.init(base)")):
        add_version(reg)
    reg.init(BASE)
    other_base = manifest().model_copy(update={"base": BASE.model_copy(update={"sha256": "f" * 64})})
    with pytest.raises(BaseMismatch):
        reg.create_version({"delta.safetensors": b"x"}, other_base)
    assert list(store.keys("models/demo/versions/")) == []


def test_base_snapshot_files_are_write_once(registry: Registry) -> None:
    assert registry.has_base_snapshot() is False
    registry.put_base_file("model.safetensors", b"weights")
    registry.put_base_file("model.safetensors", b"weights")  # same bytes again: a no-op
    assert registry.has_base_snapshot() is True
    assert registry.get_base_file("model.safetensors") == b"weights"
    with pytest.raises(RegistryError, match="write-once"):
        registry.put_base_file("model.safetensors", b"other")
    assert registry.get_base_file("model.safetensors") == b"weights"


def test_unsafe_model_version_and_file_names_are_rejected(registry: Registry, store: ObjectStore) -> None:
    with pytest.raises(InvalidName):
        Registry(store, "../escape")
    add_version(registry)
    with pytest.raises(InvalidName):
        registry.manifest("../v1")
    with pytest.raises(RegistryError, match="invalid file name"):
        registry.create_version({"../x": b"1"}, manifest())
    with pytest.raises(RegistryError, match="reserved"):
        registry.create_version({"manifest.json": b"1"}, manifest())
    assert [v.version for v in registry.versions()] == ["v1"]


# --- versions -------------------------------------------------------------------------------------------------------


def test_create_version_allocates_v1_v2_and_writes_the_manifest_last_with_checksums(
    registry: Registry, store: ObjectStore
) -> None:
    ref1 = registry.create_version({"delta.safetensors": b"one"}, manifest())
    ref2 = registry.create_version({"delta.safetensors": b"second", "card.txt": b"c"}, manifest(parent="v1"))
    assert (str(ref1), str(ref2)) == ("demo@v1", "demo@v2")
    m = registry.manifest("v2")
    assert (m.model, m.version, m.parent, m.created_by) == ("demo", "v2", "v1", "tester@ci")
    assert m.files["delta.safetensors"].sha256 == hashlib.sha256(b"second").hexdigest()
    assert m.files["delta.safetensors"].size == 6 and set(m.files) == {"delta.safetensors", "card.txt"}
    assert json.loads(store.get("models/demo/versions/v2/manifest.json"))["version"] == "v2"
    assert registry.read_file("v1", "delta.safetensors") == b"one"
    assert [(v.version, v.status) for v in registry.versions()] == [("v1", "complete"), ("v2", "complete")]
    assert registry.verify("v2") == []


def test_version_ids_sort_numerically(registry: Registry, store: ObjectStore) -> None:
    add_version(registry)
    store.put_new("models/demo/versions/v9/claim.json", b"{}")  # an abandoned claim: incomplete v9
    assert add_version(registry) == "v10"
    assert [(v.version, v.status) for v in registry.versions()] == [
        ("v1", "complete"),
        ("v9", "incomplete"),
        ("v10", "complete"),
    ]


def test_concurrent_writers_get_distinct_version_ids(registry: Registry, race) -> None:
    outcome = race(3, lambda i: registry.create_version({f"file-{i}.bin": bytes([i])}, manifest()).version)
    assert sorted(outcome) == ["v1", "v2", "v3"]
    for i, version in enumerate(outcome):  # each writer's files ended up in the version it was given
        assert registry.read_file(version, f"file-{i}.bin") == bytes([i])
        assert registry.verify(version) == []


def test_parent_must_be_a_complete_version(registry: Registry, store: ObjectStore) -> None:
    with pytest.raises(VersionNotFound, match="parent"):
        registry.create_version({"d": b"1"}, manifest(parent="v7"))
    assert list(store.keys("models/demo/versions/")) == []


def test_version_without_manifest_is_incomplete_and_cannot_be_promoted_or_read(
    registry: Registry, store: ObjectStore
) -> None:
    # A writer that died after claiming v1 and writing its delta, before the manifest:
    store.put_new("models/demo/versions/v1/claim.json", b"{}")
    store.put_new("models/demo/versions/v1/delta.safetensors", b"half")
    [info] = registry.versions()
    assert (info.version, info.status, info.files) == ("v1", "incomplete", ["delta.safetensors"])
    with pytest.raises(VersionNotValid, match="incomplete"):
        registry.manifest("v1")
    with pytest.raises(VersionNotValid, match="incomplete"):
        registry.read_file("v1", "delta.safetensors")
    with pytest.raises(VersionNotValid, match="incomplete"):
        registry.promote("v1", reason="try")
    assert registry.verify("v1") and "incomplete" in registry.verify("v1")[0]
    assert registry.champion() is None and registry.history() == []
    assert add_version(registry) == "v2"


def test_unknown_version_is_not_found(registry: Registry) -> None:
    with pytest.raises(VersionNotFound, match="demo@v4 does not exist"):
        registry.manifest("v4")
    with pytest.raises(VersionNotFound):
        registry.verify("v4")
    with pytest.raises(VersionNotFound):
        registry.reject("v4", reason="no")
    assert registry.history() == []


def test_corrupted_file_is_reported_by_verify_and_read_file_and_cannot_be_promoted(
    registry: Registry, store: ObjectStore
) -> None:
    add_version(registry, b"good weights")
    overwrite(store, "models/demo/versions/v1/delta.safetensors", b"bad weights!")
    expected, actual = hashlib.sha256(b"good weights").hexdigest(), hashlib.sha256(b"bad weights!").hexdigest()
    [problem] = registry.verify("v1")
    assert "delta.safetensors" in problem and actual in problem and expected in problem
    with pytest.raises(VersionCorrupt) as info:
        registry.read_file("v1", "delta.safetensors")
    assert (info.value.file, info.value.expected, info.value.actual) == ("delta.safetensors", expected, actual)
    assert expected in str(info.value) and actual in str(info.value)
    assert registry.read_file("v1", "config.json") == b"{}"  # the intact file still reads
    with pytest.raises(VersionNotValid, match="corrupt"):
        registry.promote("v1", reason="looks fine")
    assert registry.champion() is None and registry.history() == []
    [row] = registry.versions(verify=True)
    assert row.status == "corrupt" and "delta.safetensors" in row.problems[0]


def test_missing_model_file_makes_the_version_corrupt(registry: Registry, store: ObjectStore) -> None:
    add_version(registry)
    store.delete("models/demo/versions/v1/config.json")
    [row] = registry.versions()
    assert row.status == "corrupt" and row.problems == ["config.json: missing"]
    with pytest.raises(VersionCorrupt, match="missing"):
        registry.read_file("v1", "config.json")


def test_read_file_refuses_names_outside_the_manifest(registry: Registry) -> None:
    add_version(registry)
    with pytest.raises(FileNotInVersion, match="not a model file"):
        registry.read_file("v1", "other.bin")


def test_attachments_are_write_once_and_cannot_shadow_model_files(registry: Registry, store: ObjectStore) -> None:
    add_version(registry)
    registry.attach("v1", "metrics.json", b'{"acc": 0.9}')
    assert registry.read_attachment("v1", "metrics.json") == b'{"acc": 0.9}'
    with pytest.raises(AttachmentExists, match="nothing was changed"):
        registry.attach("v1", "metrics.json", b'{"acc": 1.0}')
    assert registry.read_attachment("v1", "metrics.json") == b'{"acc": 0.9}'
    for name in ("delta.safetensors", "manifest.json", "claim.json"):
        with pytest.raises(RegistryError, match="Nothing was written"):
            registry.attach("v1", name, b"x")
    assert registry.read_file("v1", "delta.safetensors") == b"delta"
    [row] = registry.versions()
    assert row.attachments == ["metrics.json"] and row.files == ["config.json", "delta.safetensors"]
    store.put_new("models/demo/versions/v2/claim.json", b"{}")
    with pytest.raises(VersionNotValid):
        registry.attach("v2", "metrics.json", b"{}")


# --- champion, history ----------------------------------------------------------------------------------------------


def test_promote_reject_rollback_sequence_moves_the_champion_and_logs_each_action(registry: Registry) -> None:
    for content in (b"1", b"2", b"3"):
        add_version(registry, content)
    assert registry.champion() is None
    first = registry.promote("v1", reason="first model")
    assert (first.version, first.previous, first.reason, first.actor) == ("v1", None, "first model", "tester@ci")
    registry.reject("v2", reason="regressed on counting")
    assert registry.champion().version == "v1"  # type: ignore[union-attr]
    third = registry.promote("v3", reason="gate passed", actor="pipeline")
    assert (third.version, third.previous, third.actor) == ("v3", "v1", "pipeline")
    back = registry.rollback(reason="post-promotion check failed")
    assert (back.version, back.previous) == ("v1", None)
    assert registry.champion() == back
    assert actions(registry) == [("promote", "v1"), ("reject", "v2"), ("promote", "v3"), ("rollback", "v1")]
    raw = [e.model_dump(by_alias=True, exclude_unset=True) for e in registry.history()]
    assert {k: raw[0][k] for k in ("action", "version", "from", "reason", "actor", "forced")} == {
        "action": "promote",
        "version": "v1",
        "from": None,
        "reason": "first model",
        "actor": "tester@ci",
        "forced": False,
    }
    assert raw[2]["from"] == "v1" and raw[3]["from"] == "v3" and raw[1]["reason"] == "regressed on counting"
    assert [e.from_version for e in registry.history()] == [None, None, "v1", "v3"]
    rows = {v.version: v for v in registry.versions()}
    assert rows["v1"].champion and not rows["v3"].champion
    assert (rows["v1"].recipe, rows["v1"].parent) == ("sa_proj", None)
    assert (rows["v2"].last_action, rows["v3"].last_action) == ("reject", "promote")


def test_a_rejected_version_is_promoted_only_when_forced(registry: Registry) -> None:
    add_version(registry)
    registry.reject("v1", reason="regressed")
    with pytest.raises(RegistryError, match="force=True"):
        registry.promote("v1", reason="manual")
    assert registry.champion() is None
    pointer = registry.promote("v1", reason="manual override", force=True)
    assert pointer.version == "v1" and registry.history()[-1].forced is True


def test_promoting_the_current_champion_again_changes_nothing(registry: Registry) -> None:
    add_version(registry)
    registry.promote("v1", reason="r")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote("v1", reason="again")
    assert actions(registry) == [("promote", "v1")]


def test_rollback_walks_back_the_chain_and_never_bounces(registry: Registry) -> None:
    for content in (b"1", b"2", b"3"):
        add_version(registry, content)
    for v in ("v1", "v2", "v3"):
        registry.promote(v, reason=f"ship {v}")
    assert registry.rollback(reason="bad v3").version == "v2"
    assert registry.rollback(reason="bad v2").version == "v1"
    with pytest.raises(NoPreviousChampion):
        registry.rollback(reason="again")  # must not bounce back to v2
    assert registry.champion().version == "v1"  # type: ignore[union-attr]
    # Promote v2 again, then roll back: v1 again, and still nowhere further to go.
    registry.promote("v2", reason="fixed serving")
    assert registry.rollback(reason="no, really").version == "v1"
    with pytest.raises(NoPreviousChampion):
        registry.rollback(reason="again")
    assert actions(registry) == [
        ("promote", "v1"),
        ("promote", "v2"),
        ("promote", "v3"),
        ("rollback", "v2"),
        ("rollback", "v1"),
        ("promote", "v2"),
        ("rollback", "v1"),
    ]


def test_rollback_with_no_previous_errors_and_changes_nothing(registry: Registry, store: ObjectStore) -> None:
    add_version(registry)
    with pytest.raises(NoPreviousChampion, match="no champion"):
        registry.rollback(reason="nothing to undo")
    registry.promote("v1", reason="first")
    before = store.get_with_etag("models/demo/champion.json")
    history_before = store.get("models/demo/history.jsonl")
    with pytest.raises(NoPreviousChampion, match="nothing was changed"):
        registry.rollback(reason="undo the first")
    assert store.get_with_etag("models/demo/champion.json") == before
    assert store.get("models/demo/history.jsonl") == history_before


def test_rollback_only_targets_former_champions_and_valid_versions(registry: Registry, store: ObjectStore) -> None:
    for content in (b"1", b"2", b"3"):
        add_version(registry, content)
    registry.promote("v1", reason="r")
    registry.promote("v2", reason="r")
    with pytest.raises(RegistryError, match="never champion"):
        registry.rollback("v3", reason="r")
    overwrite(store, "models/demo/versions/v1/delta.safetensors", b"rot")
    with pytest.raises(VersionNotValid, match="corrupt"):
        registry.rollback(reason="r")
    assert registry.champion().version == "v2"  # type: ignore[union-attr]
    assert actions(registry) == [("promote", "v1"), ("promote", "v2")]


def test_promotion_conflict_carries_the_winner_and_writes_nothing(registry: Registry, store: ObjectStore) -> None:
    for content in (b"1", b"2", b"3"):
        add_version(registry, content)
    registry.promote("v1", reason="first")
    gated_against, etag = registry.champion_with_etag()
    assert gated_against is not None and gated_against.version == "v1"
    Registry(store, "demo", actor="someone-else").promote("v2", reason="their gate passed")
    with pytest.raises(PromotionConflict) as info:
        registry.promote("v3", reason="my gate passed", expected_etag=etag)
    assert info.value.current is not None and info.value.current.version == "v2"
    assert "v2" in str(info.value) and "Nothing was changed" in str(info.value)
    assert registry.champion().version == "v2"  # type: ignore[union-attr]
    registry.record("superseded", "v3", "champion moved to v2 while gating", by="v2")
    assert actions(registry) == [("promote", "v1"), ("promote", "v2"), ("superseded", "v3")]
    assert registry.history()[-1].model_extra == {"by": "v2"}


def test_promotion_with_expected_etag_none_only_succeeds_when_there_is_no_champion(registry: Registry) -> None:
    add_version(registry)
    add_version(registry)
    assert registry.promote("v1", reason="first", expected_etag=None).version == "v1"
    with pytest.raises(PromotionConflict):
        registry.promote("v2", reason="thought there was none", expected_etag=None)


def test_two_threads_promoting_from_the_same_etag_exactly_one_wins(registry: Registry, race) -> None:
    for content in (b"1", b"2", b"3"):
        add_version(registry, content)
    registry.promote("v1", reason="first")
    _, etag = registry.champion_with_etag()
    candidates = ["v2", "v3"]
    outcome = race(2, lambda i: registry.promote(candidates[i], reason="gate passed", expected_etag=etag))
    winners = [candidates[i] for i, r in enumerate(outcome) if not isinstance(r, Exception)]
    losers = [r for r in outcome if isinstance(r, Exception)]
    assert len(winners) == 1 and len(losers) == 1 and isinstance(losers[0], PromotionConflict), outcome
    assert losers[0].current is not None and losers[0].current.version == winners[0]
    champion = registry.champion()
    assert champion is not None and (champion.version, champion.previous) == (winners[0], "v1")
    assert actions(registry) == [("promote", "v1"), ("promote", winners[0])]


def test_concurrent_history_appends_are_all_kept(registry: Registry, race) -> None:
    add_version(registry)
    race(4, lambda i: [registry.record("note", "v1", f"writer {i} entry {j}") for j in range(3)])
    reasons = sorted(e.reason for e in registry.history())
    assert reasons == sorted(f"writer {i} entry {j}" for i in range(4) for j in range(3))


def test_record_refuses_pointer_actions_and_clashing_fields(registry: Registry) -> None:
    add_version(registry)
    with pytest.raises(RegistryError, match=re.escape("Registry.promote()")):
        registry.record("promote", "v1", "sneaky")
    with pytest.raises(RegistryError, match="clash"):
        registry.record("note", "v1", "r", at="yesterday")
    assert registry.history() == []


def test_actor_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch, store: ObjectStore) -> None:
    monkeypatch.setenv("SKILLGRAFT_ACTOR", "ci-bot")
    assert default_actor() == "ci-bot"
    reg = Registry(store, "demo")
    reg.init(BASE)
    add_version(reg)
    assert reg.promote("v1", reason="r").actor == "ci-bot" and reg.manifest("v1").created_by == "ci-bot"
    monkeypatch.delenv("SKILLGRAFT_ACTOR")
    assert "@" in default_actor()


class LostResponses:
    """A store whose conditional writes land but answer as if they had lost (S3 retrying a request whose first
    try succeeded and whose response was lost: the retry hits the precondition)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.url = inner, inner.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_new(self, key: str, data: bytes) -> None:
        self.inner.put_new(key, data)
        raise KeyExists(self.url, key)

    def replace_if(self, key: str, data: bytes, expected: str | None) -> bool:
        assert self.inner.replace_if(key, data, expected)
        return False


def test_writes_whose_response_was_lost_still_count_as_done(store: ObjectStore) -> None:
    Registry(store, "demo").init(BASE)
    registry = Registry(LostResponses(store), "demo", actor="t")  # type: ignore[arg-type]
    assert add_version(registry) == "v1" and registry.verify("v1") == []
    assert registry.promote("v1", reason="r").version == "v1"
    assert actions(registry) == [("promote", "v1")]
