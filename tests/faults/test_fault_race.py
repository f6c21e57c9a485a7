"""Promotions racing against the same champion: exactly one wins; every other one gets PromotionConflict and is
recorded as superseded; the champion stays a complete, valid version and no history entry is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invariants import WORKER, assert_sound, snapshot

from skillgraft import steps
from skillgraft.config import SkillgraftConfig
from skillgraft.gate import Decision, GatePolicy
from skillgraft.refs import Manifest, VersionRef
from skillgraft.registry import Registry
from skillgraft.store.base import ObjectStore


def test_two_processes_promoting_at_once_exactly_one_wins(
    store: ObjectStore, store_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(store, versions=3, champion="v1")
    before = snapshot(reg)
    _, etag = reg.champion_with_etag()
    start_at = f"{time.time() + 1.5:.3f}"  # both workers are imported (~1 s) and waiting by then: a real race
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}

    def start(version: str) -> subprocess.Popen[str]:
        args = [
            "--promote-version",
            version,
            "--expected-etag",
            str(etag),
            "--start-at",
            start_at,
            "--actor",
            f"run-{version}",
        ]
        return subprocess.Popen([sys.executable, str(WORKER), "--store", store_url, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=root)  # fmt: skip

    procs = [start("v2"), start("v3")]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out))

    assert sorted(o["outcome"] for o in outcomes) == ["promoted", "superseded"], outcomes
    winner = next(o["version"] for o in outcomes if o["outcome"] == "promoted")
    loser = next(o["version"] for o in outcomes if o["outcome"] == "superseded")
    assert all(o["champion"] == winner for o in outcomes)  # the loser saw who won
    fresh = Registry(store, "demo")
    champion = fresh.champion()
    assert champion is not None and (champion.version, champion.previous) == (winner, "v1")
    assert [(e.action, e.version, e.actor) for e in fresh.history()[1:]] in (
        [("promote", winner, f"run-{winner}"), ("superseded", loser, f"run-{loser}")],
        [("superseded", loser, f"run-{loser}"), ("promote", winner, f"run-{winner}")],
    )
    assert_sound(fresh, before)


def candidate(version: str, etag: str | None) -> steps.CandidateInfo:
    return steps.CandidateInfo(
        candidate=VersionRef(model="demo", version=version), parent="v1", champion_etag=etag, new_tasks=["first"],
        known_tasks=["first"], trainable_parameters=1, total_parameters=2, seconds=0.0, device="cpu",
        recipe="sa_proj", losses=[], log_every=1,
    )  # fmt: skip


def test_three_runs_promoting_through_the_dag_step_one_wins_the_others_are_recorded_superseded(
    store: ObjectStore, demo_registry: Callable[..., Registry], demo_chain: Any
) -> None:
    reg = demo_registry(store, versions=1, champion="v1")
    for i in (1, 2, 3):  # three candidates, each trained from v1 (the champion when their runs started)
        manifest = Manifest(model="demo", version="pending", parent="v1", base=demo_chain.base,
                            recipe={"kind": "sa_proj"}, tasks=demo_chain.tasks)  # fmt: skip
        reg.create_version({"delta.safetensors": demo_chain.versions[1].delta, "run.json": f'{{"run": {i}}}'.encode()},
                           manifest)  # fmt: skip
    before = snapshot(reg)
    _, etag = reg.champion_with_etag()
    cfg = SkillgraftConfig(store="unused")
    barrier = threading.Barrier(3)
    results: dict[str, steps.PromotionResult] = {}

    def run(version: str) -> None:
        decision = Decision(promote=True, reasons=["ok"], champion="v1", candidate=version, policy=GatePolicy())
        barrier.wait()
        results[version] = steps.promote(store, cfg, candidate(version, etag), decision)

    threads = [threading.Thread(target=run, args=(v,)) for v in ("v2", "v3", "v4")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    winners = [v for v, r in results.items() if r.promoted]
    assert len(results) == 3 and len(winners) == 1, results
    winner = winners[0]
    losers = sorted(set(results) - {winner})
    assert all(results[v].champion == winner and "superseded" in results[v].reason for v in losers)
    fresh = Registry(store, "demo")
    assert fresh.champion().version == winner  # type: ignore[union-attr]
    new = fresh.history()[len(before.history) :]
    assert sorted((e.action, e.version) for e in new) == sorted(
        [("promote", winner)] + [("superseded", v) for v in losers]
    )
    assert_sound(fresh, before)


class BeforeFirstHistoryWrite:
    """A store that runs ``action`` once, just before the first write of history.jsonl (after the pointer moved)."""

    def __init__(self, inner: ObjectStore, action: Callable[[], None]) -> None:
        self.inner, self.url, self.action, self.fired = inner, inner.url, action, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def replace_if(self, key: str, data: bytes, expected: str | None) -> bool:
        if key.endswith("/history.jsonl") and not self.fired:
            self.fired = True
            self.action()
        return self.inner.replace_if(key, data, expected)


def test_a_move_logged_for_a_slow_writer_by_another_one_is_not_logged_twice(
    store: ObjectStore, demo_registry: Callable[..., Registry]
) -> None:
    """Run A moved the pointer to v2 and is about to log it; run B, promoting v3 right then, finds the move unlogged and
    logs it (recovered) before its own. A's entry must not appear a second time."""
    demo_registry(store, versions=3, champion="v1")
    other = Registry(store, "demo", actor="run-b")
    slow = Registry(BeforeFirstHistoryWrite(store, lambda: other.promote("v3", reason="run b")), "demo", actor="run-a")  # type: ignore[arg-type]
    slow.promote("v2", reason="run a")
    history = Registry(store, "demo").history()
    assert [(e.action, e.version, e.from_version, e.actor) for e in history] == [
        ("promote", "v1", None, "tester@ci"), ("promote", "v2", "v1", "run-a"), ("promote", "v3", "v2", "run-b"),
    ]  # fmt: skip
    assert history[1].model_extra == {"recovered": True} and history[1].reason == "run a"
    assert Registry(store, "demo").unlogged_move() is None
