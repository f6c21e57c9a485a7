"""The promote → check → rollback protocol (skillgraft.promotion) on a real registry, local and S3.

The check is the only part replaced here (by a verdict given in the test); the pointer moves, the rollback and the
history are the registry's own. The flow and the CLI run the same functions: tests/test_flow.py and the CLI tests
cover them end to end with real checks.
"""

from __future__ import annotations

import pytest

from skillgraft import steps
from skillgraft.config import SkillgraftConfig
from skillgraft.promotion import CheckResult, PromotionResult, promote_checked, settle
from skillgraft.refs import BaseRef, Manifest
from skillgraft.registry import Registry
from skillgraft.store.base import ObjectStore

BASE = BaseRef(source="builtin:test", sha256="0" * 64, model_type="llama")


def add_version(reg: Registry, content: bytes) -> str:
    manifest = Manifest(model="demo", version="pending", parent=None, base=BASE, recipe={"kind": "sa_proj"})
    return reg.create_version({"delta.safetensors": content, "config.json": b"{}"}, manifest).version


def actions(reg: Registry) -> list[tuple[str, str]]:
    return [(e.action, e.version) for e in reg.history()]


@pytest.fixture
def reg(store: ObjectStore) -> Registry:
    r = Registry(store, "demo", actor="tester@ci")
    r.init(BASE)
    for content in (b"1", b"2", b"3"):
        add_version(r, content)
    r.promote("v1", reason="first")
    return r


def verdict(ok: bool, seen: list):
    def check(version: str, previous: str | None) -> CheckResult:
        seen.append((version, previous))
        return CheckResult(
            ok=ok, version=version, scores={}, reasons=["smoke fine" if ok else "task count: 0.2 vs 0.9"]
        )

    return check


def real_rollback(store: ObjectStore):
    cfg = SkillgraftConfig(model="demo", store="unused")
    return lambda check, to: steps.auto_rollback(store, cfg, check, to).version


def mover(reg: Registry, version: str):
    def move() -> PromotionResult:
        pointer = reg.promote(version, reason="gate passed")
        return PromotionResult(promoted=True, champion=pointer.version, previous=pointer.previous, reason="gate passed")

    return move


def test_a_passing_check_keeps_the_promotion(reg: Registry, store: ObjectStore) -> None:
    seen: list = []
    out = promote_checked("v2", mover(reg, "v2"), verdict(True, seen), real_rollback(store))
    assert (out.status, out.champion, out.previous, seen) == ("promoted", "v2", "v1", [("v2", "v1")])
    assert reg.champion().version == "v2"  # type: ignore[union-attr]


def test_a_failing_check_rolls_back_to_the_champion_before(reg: Registry, store: ObjectStore) -> None:
    out = promote_checked("v2", mover(reg, "v2"), verdict(False, []), real_rollback(store))
    assert (out.status, out.champion) == ("rolled-back", "v1")
    assert out.notes == ["task count: 0.2 vs 0.9"]
    assert reg.champion().version == "v1"  # type: ignore[union-attr]
    assert actions(reg)[-2:] == [("promote", "v2"), ("rollback", "v1")]
    assert "post-promotion check of v2 failed: task count" in reg.history()[-1].reason


def test_a_failing_check_with_no_champion_before_leaves_it_in_place(store: ObjectStore) -> None:
    r = Registry(store, "demo", actor="tester@ci")
    r.init(BASE)
    add_version(r, b"1")
    out = promote_checked("v1", mover(r, "v1"), verdict(False, []), real_rollback(store))
    assert (out.status, out.champion) == ("check-failed", "v1")
    assert out.notes[-1] == "no earlier champion to roll back to"
    assert r.champion().version == "v1"  # type: ignore[union-attr]


def test_a_rollback_after_another_promotion_landed_leaves_the_newer_champion(reg: Registry, store: ObjectStore) -> None:
    moved = mover(reg, "v2")()

    def check_while_someone_promotes(version: str, previous: str | None) -> CheckResult:
        Registry(store, "demo", actor="someone-else").promote("v3", reason="their gate passed")
        return verdict(False, [])(version, previous)

    out = settle(moved.champion, moved.previous, check_while_someone_promotes, real_rollback(store))
    assert (out.status, out.champion) == ("rollback-skipped", "v3")
    assert out.notes[0] == "task count: 0.2 vs 0.9" and "no longer v2" in out.notes[-1]
    assert reg.champion().version == "v3"  # type: ignore[union-attr]
    assert actions(reg)[-2:] == [("promote", "v3"), ("rollback-skipped", "v2")]


def test_a_superseded_promotion_is_not_checked(reg: Registry, store: ObjectStore) -> None:
    seen: list = []
    lost = PromotionResult(promoted=False, champion="v3", previous="v1", reason="champion moved to v3")
    out = promote_checked("v2", lambda: lost, verdict(True, seen), real_rollback(store))
    assert (out.status, out.version, out.champion, out.notes, seen) == (
        "superseded",
        "v2",
        "v3",
        ["champion moved to v3"],
        [],
    )


def test_no_check_asked_for_promotes_without_one(reg: Registry, store: ObjectStore) -> None:
    out = promote_checked("v2", mover(reg, "v2"), None, real_rollback(store))
    assert (out.status, out.champion, out.check) == ("promoted", "v2", None)
