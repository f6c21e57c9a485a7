"""What a user sees when something goes wrong under `skillgraft run` and friends: one line saying what, where and what
happened to the data, and an exit code — never a traceback. Each situation is built for real: a missing bucket and an
unreachable endpoint on a real S3 API, a full and a read-only file system (tmpfs mounts), a corrupt stored version, an
embedded Prefect server started cold, two runs at once."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from skillgraft import demo
from skillgraft.data import Intake
from skillgraft.registry import Registry
from skillgraft.store import LocalStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def skillgraft(
    *args: str, env: dict[str, str] | None = None, api: bool = True, timeout: int = 600
) -> subprocess.CompletedProcess:
    """The installed `skillgraft` command; ``api``: report to the test's Prefect server (if one runs)."""
    from prefect.settings import PREFECT_API_URL

    full = {**os.environ, "OMP_NUM_THREADS": "1"}
    full.pop("PREFECT_API_URL", None)
    if api and PREFECT_API_URL.value():
        full["PREFECT_API_URL"] = PREFECT_API_URL.value()
    full.update(env or {})
    cmd = [str(Path(sys.executable).parent / "skillgraft"), *args]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def said(run: subprocess.CompletedProcess) -> str:
    """stderr+stdout with rich's line wrapping undone; asserts no traceback reached the user."""
    text = run.stdout + run.stderr
    assert "Traceback" not in text, text
    return " ".join(text.split())


def task_files(tmp: Path, task: str = "first", rows: int = 60, seed: int = 0) -> tuple[Path, Path]:
    spec = tmp / f"{task}.yaml"
    spec.write_text(yaml.safe_dump(demo.SPECS[task].model_dump(mode="json")))
    return spec, demo.write_jsonl(tmp / f"{task}-{seed}.jsonl", demo.generate(task, rows, seed=seed))


def small_config(tmp: Path, store: str, name: str = "skillgraft.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump({
        "store": store, "train": {"steps": 3, "progress": False},
        "suite": {"max_eval_examples": 16, "probe_prompts": 4, "smoke_examples": 4},
    }))  # fmt: skip
    return path


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to build a full / read-only file system: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# --- input the user can fix ------------------------------------------------------------------------------------------


def test_bad_names_and_versions_are_one_line(tmp_path, demo_registry):
    store = LocalStore(tmp_path / "store")
    demo_registry(store, versions=1, champion="v1")
    bad_task = skillgraft("ingest", "--task", "../etc", "--store", str(store.root))
    assert bad_task.returncode == 2 and "invalid task name '../etc'" in said(bad_task)
    bad_version = skillgraft("forgetting", "v99", "--store", str(store.root))
    assert bad_version.returncode != 0 and "v99" in said(bad_version)
    bad_lineage = skillgraft("forgetting", "../v1", "--store", str(store.root))
    assert bad_lineage.returncode != 0 and "../v1" in said(bad_lineage)


# --- the store ---------------------------------------------------------------------------------------------------------


def test_run_on_a_missing_bucket_says_so_and_submits_nothing(tmp_path, s3_endpoint, s3_client):
    spec, data = task_files(tmp_path)
    run = skillgraft("run", "first", str(data), "--spec", str(spec), "--store", "s3://sg-no-such-bucket/team",
                     env={"SKILLGRAFT_S3_ENDPOINT_URL": s3_endpoint})  # fmt: skip
    text = said(run)
    assert run.returncode == 1 and "sg-no-such-bucket" in text and "error:" in text
    assert "secret" not in text.lower() or "testing" not in text  # credentials never printed


def test_run_on_an_unreachable_endpoint_says_so(tmp_path):
    spec, data = task_files(tmp_path)
    run = skillgraft("run", "first", str(data), "--spec", str(spec), "--store", "s3://sg-bucket/team",
                     env={"SKILLGRAFT_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
                          "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"})  # fmt: skip
    text = said(run)
    assert run.returncode == 1 and "127.0.0.1:9" in text and "error:" in text


def test_full_disk_during_a_run_is_one_line_and_the_data_waits(harness, tmp_path):
    spec, data = task_files(tmp_path)
    with tmpfs(tmp_path / "small", "600k") as root:
        store = root / "store"
        run = skillgraft(
            "run", "first", str(data), "--spec", str(spec), "--config", str(small_config(tmp_path, str(store)))
        )
        text = said(run)
        assert run.returncode == 1, text
        assert "no space left on the device" in text and "Nothing half-written is used" in text
        assert Intake(LocalStore(store)).batches("first") == []  # nothing accepted...
        assert list(LocalStore(store).keys("incoming/first/"))  # ...the submitted file still waits


def test_read_only_store_is_one_line(tmp_path):
    spec, data = task_files(tmp_path)
    with tmpfs(tmp_path / "ro", "20m") as root:
        store = root / "store"
        landed = skillgraft("submit", "first", str(data), "--spec", str(spec), "--store", str(store))
        assert landed.returncode == 0, landed.stdout + landed.stderr
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        run = skillgraft("ingest", "--store", str(store))
        text = said(run)
        assert run.returncode == 1 and "read-only file system" in text, text


# --- the registry under `run` ------------------------------------------------------------------------------------------


def test_outcome_line_names_the_champion_after_rejected_data(harness, tmp_path, demo_registry):
    store = LocalStore(tmp_path / "store")
    demo_registry(store, versions=1, champion="v1")
    spec, _ = task_files(tmp_path, task="last")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "last : a b c"}\n' * 10)  # no answers: quarantined
    run = skillgraft("run", "last", str(bad), "--spec", str(spec), "--store", str(store.root))
    text = said(run)
    assert run.returncode == 1 and "outcome: data-rejected; champion of demo: v1" in text, text
    assert "field 'answer' is missing" in text


def test_corrupt_champion_stops_run_with_one_line(harness, tmp_path, demo_registry):
    store = LocalStore(tmp_path / "store")
    reg: Registry = demo_registry(store, versions=1, champion="v1")
    checked = skillgraft("check", "--store", str(store.root))  # a champion checked after its promotion
    assert checked.returncode == 0, checked.stdout + checked.stderr
    key = next(k for k in store.keys(f"models/{reg.model}/versions/v1/") if k.endswith("delta.safetensors"))
    path = store.root / key
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    _, data = task_files(tmp_path, rows=40, seed=3)
    run = skillgraft(
        "run", "first", str(data), "--store", str(store.root), "--config", str(small_config(tmp_path, str(store.root)))
    )
    text = said(run)
    assert run.returncode == 1 and "error: demo@v1: delta.safetensors has sha256" in text, text
    assert "the file was changed or damaged after it was written" in text
    assert reg.versions()[-1].version == "v1"  # nothing trained on it


# --- the embedded Prefect server ----------------------------------------------------------------------------------------


def test_two_runs_at_once_on_a_cold_prefect_home_both_finish(tmp_path):
    """No server configured, a new PREFECT_HOME (a fresh clone), Prefect's own 20 s startup default not set: each run
    starts an embedded server at the same moment, on the same database, on a busy machine. Both must get through
    (the startup timeout skillgraft sets), and the store stays consistent (one champion, every batch trained once)."""
    home = tmp_path / "prefect-home"
    store = tmp_path / "store"
    env = {"PREFECT_HOME": str(home)}
    spec, data0 = task_files(tmp_path, seed=0)
    _, data1 = task_files(tmp_path, seed=1)
    configs = [small_config(tmp_path, str(store), f"c{i}.yaml") for i in range(2)]
    intake = Intake(LocalStore(store))
    intake.register_task(demo.SPECS["first"])
    cmds = [[str(Path(sys.executable).parent / "skillgraft"), "run", "first", str(d), "--config", str(c)]
            for d, c in zip((data0, data1), configs)]  # fmt: skip
    full = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    }
    full.update(env, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(c, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL) for c in cmds]  # fmt: skip
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        text = " ".join(out.split())
        assert "Traceback" not in out and "Timed out while attempting to connect" not in out, out
        assert "outcome:" in text, out
        assert p.returncode in (0, 1, 3), out  # promoted, rejected, or nothing left to train
    # the promotions serialise: each run's outcome line agrees with the history, and the champion is the last promoted
    statuses = [re.search(r"outcome: ([a-z-]+); champion of demo: (\S+)", " ".join(o.split())).groups() for o in outs]
    reg = Registry(LocalStore(store), "demo")
    promotions = [e.version for e in reg.history() if e.action == "promote"]
    assert sorted(v for (st, v) in statuses if st == "promoted") == sorted(promotions)
    assert {st for st, _ in statuses} <= {"promoted", "rejected", "superseded", "no-new-data"}, statuses
    pointer = reg.champion()
    assert (pointer.version if pointer else None) == (promotions[-1] if promotions else None)
    trained = {b.batch_id for v in reg.versions() if v.status == "complete" for b in reg.manifest(v.version).batches}
    assert len(trained) == 2  # both files were accepted and trained on
