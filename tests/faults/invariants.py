"""What every fault test asserts afterwards: the champion is a complete, checksum-valid, loadable version, and nothing
that existed before the fault was lost or changed."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillgraft.registry import HistoryEntry, Registry

WORKER = Path(__file__).with_name("crash_worker.py")


@dataclass
class Snapshot:
    """The registry's durable state before a fault: complete versions (their manifests and file bytes), the history."""

    champion: str | None
    complete: dict[str, bytes]  # version -> manifest bytes
    files: dict[str, bytes]  # key -> bytes of every model file of a complete version, and of the base snapshot
    history: list[HistoryEntry]


def snapshot(reg: Registry) -> Snapshot:
    root = f"models/{reg.model}"
    complete = {v.version: reg.store.get(f"{root}/versions/{v.version}/manifest.json")
                for v in reg.versions(verify=True) if v.status == "complete"}  # fmt: skip
    files = {k: reg.store.get(k) for k in reg.store.keys(f"{root}/base/")}
    for version in complete:
        for name in reg.manifest(version).files:
            key = f"{root}/versions/{version}/{name}"
            files[key] = reg.store.get(key)
    champion = reg.champion()
    return Snapshot(champion.version if champion else None, complete, files, reg.history())


def assert_sound(reg: Registry, before: Snapshot | None = None, *, load: bool = True) -> None:
    """The champion (if any) and its whole parent chain are complete and checksum-valid, and it loads (base + deltas,
    checksums verified on read); everything in ``before`` is still there, byte for byte, and the history only grew."""
    champion = reg.champion()
    rows = {v.version: v for v in reg.versions(verify=True)}
    if champion is not None:
        row = rows.get(champion.version)
        assert row is not None and row.status == "complete", (champion, row)
        if load:
            from skillgraft.steps import load_version

            load_version(Registry(reg.store, reg.model), champion.version)
    if before is None:
        return
    for version, manifest in before.complete.items():
        assert reg.store.get(f"models/{reg.model}/versions/{version}/manifest.json") == manifest, version
        assert rows[version].status == "complete", rows[version]
    for key, data in before.files.items():
        assert reg.store.get(key) == data, key
    after = reg.history()
    assert after[: len(before.history)] == before.history, "history lost or rewrote entries"


def run_worker(
    store_url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run crash_worker.py with the test's environment (AWS test credentials, the S3 endpoint) plus ``env``."""
    import os

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    root = Path(__file__).resolve().parents[2]
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), full_env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, str(WORKER), "--store", store_url, *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=root, check=False,
    )  # fmt: skip


def status_json(store_url: str) -> tuple[int, dict[str, Any]]:
    """``skillgraft status --json`` through typer's CliRunner: (exit code, document)."""
    import json

    from typer.testing import CliRunner

    from skillgraft.cli import app

    result = CliRunner().invoke(app, ["status", "--store", store_url, "--json"])
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)
