"""`skillgraft run` / `validate` as a user runs them (the installed command, a real Prefect server, a real store):
every option reaches the flow, a wrong request stops before anything is submitted, and what goes wrong is one line
and an exit code — never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skillgraft import demo
from skillgraft.models import save_pretrained_dir
from skillgraft.store import LocalStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def skillgraft(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed `skillgraft` command, reporting to the test's Prefect server when one runs."""
    from prefect.settings import PREFECT_API_URL

    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if PREFECT_API_URL.value():
        full["PREFECT_API_URL"] = PREFECT_API_URL.value()
    cmd = [str(Path(sys.executable).parent / "skillgraft"), *args]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def no_traceback(run: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """The demo model saved as a Hugging Face directory: a base a user would pass with --base."""
    tokenizer = demo.build_tokenizer()
    return save_pretrained_dir(demo.build_model(tokenizer), tokenizer, tmp_path_factory.mktemp("bases") / "demo-hf")


def task_files(tmp: Path, task: str = "first", rows: int = 80, seed: int = 0) -> tuple[Path, Path]:
    spec = tmp / f"{task}.yaml"
    spec.write_text(yaml.safe_dump(demo.SPECS[task].model_dump(mode="json")))
    return spec, demo.write_jsonl(tmp / f"{task}-{seed}.jsonl", demo.generate(task, rows, seed=seed))


def small_config(tmp: Path, store: Path, **extra) -> Path:
    path = tmp / "skillgraft.yaml"
    path.write_text(yaml.safe_dump({
        "store": str(store), "model": "team",
        "train": {"steps": 3, "progress": False}, "suite": {"max_eval_examples": 16, "probe_prompts": 4, "smoke_examples": 4},
        **extra,
    }))  # fmt: skip
    return path


def test_run_base_flag_registers_that_base_and_another_base_later_is_refused(harness, tmp_path, demo_dir):
    store = tmp_path / "store"
    config = small_config(tmp_path, store)
    spec, data = task_files(tmp_path)

    first = skillgraft("run", "first", str(data), "--spec", str(spec), "--base", str(demo_dir), "--config", str(config))
    no_traceback(first)
    assert first.returncode in (0, 3), first.stdout + first.stderr  # promoted or rejected: it trained
    info = json.loads((store / "models/team/model.json").read_text())
    assert info["base"]["source"] == str(demo_dir.resolve()) and info["base"]["snapshot"] is False
    assert "decision:" in first.stdout

    other = tmp_path / "other-base"
    tokenizer = demo.build_tokenizer()
    save_pretrained_dir(demo.build_model(tokenizer), tokenizer, other)
    _, more = task_files(tmp_path, rows=40, seed=1)
    landed_before = sorted(LocalStore(store).keys("incoming/"))
    refused = skillgraft("run", "first", str(more), "--base", str(other), "--config", str(config))
    no_traceback(refused)
    assert refused.returncode == 2
    said = " ".join(refused.stderr.split())
    assert f"registered on base {demo_dir.resolve()}" in said and "Nothing was submitted or trained" in said
    assert sorted(LocalStore(store).keys("incoming/")) == landed_before  # nothing landed

    # the same base given again (relative path, from its parent directory) is the registered one
    same = subprocess.run(
        [str(Path(sys.executable).parent / "skillgraft"), "validate", "first", str(more), "--config", str(config)],
        capture_output=True, text=True, cwd=demo_dir.parent, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert same.returncode == 0, same.stdout + same.stderr


def test_config_typo_stops_run_with_the_nearest_name_and_nothing_submitted(tmp_path):
    store = tmp_path / "store"
    config = small_config(tmp_path, store, gate={"max_dorp": 0.2})
    spec, data = task_files(tmp_path)
    run = skillgraft("run", "first", str(data), "--spec", str(spec), "--config", str(config))
    no_traceback(run)
    assert run.returncode == 2
    assert "did you mean 'gate.max_drop'?" in " ".join(run.stderr.split())
    assert not store.exists() or not list(LocalStore(store).keys("incoming/"))


def test_pickle_only_base_is_one_clear_line_not_a_traceback(harness, tmp_path):
    base = tmp_path / "pickled"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (base / "pytorch_model.bin").write_bytes(b"never unpickled")
    (base / "tokenizer.json").write_text("{}")
    store = tmp_path / "store"
    spec, data = task_files(tmp_path)
    run = skillgraft("run", "first", str(data), "--spec", str(spec), "--base", str(base),
                     "--config", str(small_config(tmp_path, store)))  # fmt: skip
    no_traceback(run)
    assert run.returncode == 2, run.stdout + run.stderr
    said = " ".join(run.stderr.split())
    assert "error: base model:" in said and "never unpickles" in said and "Nothing was read" in said
    assert not (store / "models/team/model.json").exists()


def test_validate_with_a_spec_registers_nothing_and_a_different_spec_later_is_a_clear_error(tmp_path):
    store = tmp_path / "store"
    config = small_config(tmp_path, store)
    spec, data = task_files(tmp_path)
    checked = skillgraft("validate", "first", str(data), "--spec", str(spec), "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not (store / "tasks/first/task.json").exists()  # "without submitting anything": no spec either

    registered = skillgraft("submit", "first", str(data), "--spec", str(spec), "--config", str(config))
    assert registered.returncode == 0, registered.stdout + registered.stderr
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**demo.SPECS["first"].model_dump(mode="json"), "eval_fraction": 0.5}))
    for command in ("validate", "submit"):
        again = skillgraft(command, "first", str(data), "--spec", str(changed), "--config", str(config))
        no_traceback(again)
        assert again.returncode == 2 and "different spec" in " ".join(again.stderr.split()), again.stderr


def test_snapshot_base_makes_the_store_self_contained(harness, tmp_path):
    """--snapshot-base copies a local base into the store: the directory can go, the store still loads the model."""
    import shutil

    tokenizer = demo.build_tokenizer()
    base = save_pretrained_dir(demo.build_model(tokenizer), tokenizer, tmp_path / "gone-later")
    store = tmp_path / "store"
    spec, data = task_files(tmp_path)
    run = skillgraft("run", "first", str(data), "--spec", str(spec), "--base", str(base), "--snapshot-base",
                     "--config", str(small_config(tmp_path, store)))  # fmt: skip
    no_traceback(run)
    assert run.returncode in (0, 3), run.stdout + run.stderr
    info = json.loads((store / "models/team/model.json").read_text())
    assert info["base"]["snapshot"] is True
    assert (store / "models/team/base/model.safetensors").is_file()
    shutil.rmtree(base)  # the worker elsewhere has no such directory
    exported = skillgraft("export", "v1", "--out", str(tmp_path / "out"), "--store", str(store), "--model", "team")
    no_traceback(exported)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert (tmp_path / "out/model.safetensors").is_file()


def test_hub_base_is_pinned_at_its_revision(harness, tmp_path, demo_dir):
    """A hub id with --revision: loaded from that commit of the (offline) Hugging Face cache, recorded, and a later
    run asking for another revision of the registered model stops before submitting."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny"
    shutil.copytree(demo_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    store = tmp_path / "store"
    config = small_config(tmp_path, store)
    spec, data = task_files(tmp_path)
    run = skillgraft("run", "first", str(data), "--spec", str(spec), "--base", "acme/tiny", "--revision", commit,
                     "--config", str(config), env=env)  # fmt: skip
    no_traceback(run)
    assert run.returncode in (0, 3), run.stdout + run.stderr
    info = json.loads((store / "models/team/model.json").read_text())
    assert (info["base"]["source"], info["base"]["revision"]) == ("acme/tiny", commit)

    _, more = task_files(tmp_path, rows=40, seed=1)
    other = skillgraft("run", "first", str(more), "--revision", "f" * 40, "--config", str(config), env=env)
    no_traceback(other)
    assert other.returncode == 2 and f"at revision {commit}" in " ".join(other.stderr.split())
    missing = skillgraft("run", "first", str(more), "--base", "acme/tiny", "--revision", "f" * 40, "--model", "other",
                         "--config", str(config), env=env)  # fmt: skip
    no_traceback(missing)
    assert missing.returncode == 2 and "not in the local Hugging Face cache" in " ".join(missing.stderr.split())
