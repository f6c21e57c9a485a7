"""A promoting process SIGKILLed at each point of a version write and a promotion: a fresh Registry sees a consistent
state, `skillgraft status` reports what the dead writer left, and the next promotion works.

Each case runs crash_worker.py as a subprocess against the real store (a local directory, or moto's S3 HTTP API on
loopback) and kills it with SIGKILL just before one write.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from invariants import assert_sound, run_worker, snapshot, status_json

from skillgraft.refs import Manifest
from skillgraft.registry import Registry, VersionNotValid
from skillgraft.steps import load_version

ALL_FILES = ["delta.safetensors", "extra-a.json", "extra-b.json"]
# kill point -> (status of the dead writer's version v3 afterwards, its files in the store, champion afterwards)
EXPECTED = {
    "after-claim": ("incomplete", [], "v2"),
    "after-some-files": ("incomplete", ["delta.safetensors"], "v2"),
    "before-manifest": ("incomplete", ALL_FILES, "v2"),
    "mid-manifest": ("incomplete", ALL_FILES, "v2"),
    "before-pointer": ("complete", ALL_FILES, "v2"),
    "before-history": ("complete", ALL_FILES, "v3"),
}
CASES = [
    *(pytest.param("s3", point, id=f"s3-{point}") for point in EXPECTED if point != "mid-manifest"),
    *(pytest.param("local", point, id=f"local-{point}")
      for point in ("after-some-files", "mid-manifest", "before-pointer", "before-history")),
]  # fmt: skip


@pytest.fixture
def backend_store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_store")


def model_files(tmp_path: Path, delta: bytes) -> list[str]:
    """Three model files, so a kill can land between them (the delta first, the largest)."""
    args = []
    for name, data in (("delta.safetensors", delta), ("extra-a.json", b'{"a": 1}'), ("extra-b.json", b'{"b": 2}')):
        (tmp_path / name).write_bytes(data)
        args += ["--file", f"{name}={tmp_path / name}"]
    return args


@pytest.mark.parametrize(("backend_store", "point"), CASES, indirect=["backend_store"])
def test_promoting_process_killed_leaves_a_sound_registry_and_the_next_promote_works(
    backend_store: Any, point: str, demo_registry: Callable[..., Registry], demo_chain: Any, tmp_path: Path,
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    store = backend_store
    if store.url.startswith("s3://"):
        url = store.url
        monkeypatch.setenv("SKILLGRAFT_S3_ENDPOINT_URL", request.getfixturevalue("s3_endpoint"))  # worker and CLI
    else:
        url = str(store.root)
    demo_registry(store, versions=2, champion="v2")
    before = snapshot(Registry(store, "demo"))

    proc = run_worker(url, "--kill-at", point, "--promote", *model_files(tmp_path, demo_chain.versions[2].delta))
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)

    reg = Registry(store, "demo", actor="tester@ci")  # a fresh process's view
    assert_sound(reg, before)
    want_status, want_files, want_champion = EXPECTED[point]
    rows = {v.version: v for v in reg.versions(verify=True)}
    assert (rows["v3"].status, rows["v3"].files) == (want_status, want_files), rows["v3"]
    assert reg.champion().version == want_champion  # type: ignore[union-attr]

    code, doc = status_json(url)
    assert code == 0 and doc["champion_ok"] and doc["champion"]["version"] == want_champion
    v3 = next(v for v in doc["versions"] if v["version"] == "v3")
    assert v3["status"] == want_status
    if want_status == "incomplete":
        assert "no manifest.json" in v3["problems"][0] and "claimed by crash-worker" in v3["problems"][0]
        with pytest.raises(VersionNotValid, match="incomplete"):
            load_version(reg, "v3")
        with pytest.raises(VersionNotValid):
            reg.promote("v3", reason="should be refused")
    if point == "before-history":  # pointer moved, log one entry short: reported, then repaired by the next move
        assert doc["unlogged_move"]["version"] == "v3" and doc["unlogged_move"]["recovered"] is True
        assert [e.action for e in reg.history()] == ["promote", "promote"]
    else:
        assert doc["unlogged_move"] is None

    # The next promotion works: a new version on the current champion, promoted against the current pointer.
    champion = reg.champion()
    assert champion is not None
    manifest = Manifest(model="demo", version="pending", parent=champion.version, base=demo_chain.base,
                        recipe={"kind": "sa_proj"}, tasks=demo_chain.tasks)  # fmt: skip
    new = reg.create_version({"delta.safetensors": demo_chain.versions[3].delta}, manifest).version
    assert new == "v4"
    _, etag = reg.champion_with_etag()
    assert reg.promote(new, reason="after the crash", expected_etag=etag).previous == champion.version
    assert_sound(reg, before, load=False)  # v4 only adds a delta to the chain loaded above
    moves = [(e.action, e.version, e.from_version) for e in reg.history() if e.action == "promote"]
    assert moves == [("promote", "v1", None), ("promote", "v2", "v1"),
                     *([("promote", "v3", "v2")] if point == "before-history" else []),
                     ("promote", "v4", want_champion)]  # fmt: skip
    assert reg.unlogged_move() is None
    if point == "before-history":
        recovered = [e for e in reg.history() if e.version == "v3"]
        assert len(recovered) == 1 and recovered[0].model_extra == {"recovered": True}
        assert recovered[0].reason == "promoted by crash-worker" and recovered[0].actor == "crash-worker"


def test_killed_worker_leaves_no_visible_temp_file_on_a_local_store(local_store: Any, demo_registry: Callable[..., Registry],
                                                                  demo_chain: Any, tmp_path: Path) -> None:  # fmt: skip
    demo_registry(local_store, versions=1, champion="v1")
    proc = run_worker(str(local_store.root), "--kill-at", "mid-manifest",
                      *model_files(tmp_path, demo_chain.versions[1].delta))  # fmt: skip
    assert proc.returncode == -signal.SIGKILL
    leftovers = list(Path(local_store.root).rglob(".tmp-*"))
    assert [p.name.endswith(".part") for p in leftovers] == [True]  # the dead writer's temp manifest, on disk...
    assert not any(".tmp-" in k for k in local_store.keys(""))  # ...but never a key
    reg = Registry(local_store, "demo")
    assert [(v.version, v.status) for v in reg.versions()] == [("v1", "complete"), ("v2", "incomplete")]
