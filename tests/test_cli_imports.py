"""The read-only commands answer without loading the model stack: the installed `skillgraft` script runs `status`
and `history` on a store with a promoted champion, and `validate --help`, in a fresh interpreter whose modules are
then read back — neither torch nor transformers may be among them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from skillgraft.store import LocalStore

HEAVY = ("torch", "transformers")

# Runs the installed console script as `python <script> ARGS` would, then writes the exit code and the heavy modules
# the process holds to the file named by the first argument.
_RUN_SCRIPT = """
import json, runpy, sys
out, script, args, wanted = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), set(json.loads(sys.argv[4]))
sys.argv = [script, *args]
code = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
heavy = sorted({name.split(".")[0] for name in sys.modules} & wanted)
with open(out, "w") as f:
    json.dump({"code": code, "heavy": heavy}, f)
"""


def run_installed(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    script = Path(sys.executable).parent / "skillgraft"
    assert script.is_file(), f"the skillgraft command is not installed next to {sys.executable}"
    report = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLGRAFT_")}
    done = subprocess.run(
        [sys.executable, "-c", _RUN_SCRIPT, str(report), str(script), json.dumps(list(args)), json.dumps(HEAVY)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text()), " ".join(done.stdout.split())


@pytest.fixture
def champion_store(tmp_path: Path, demo_registry: Callable[..., Any]) -> str:
    """A local store holding the demo model with three versions, v2 promoted over v1."""
    root = tmp_path / "store"
    demo_registry(LocalStore(root), versions=3, champion="v2")
    return str(root)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("status",), "champion: v2"),
        (("status", "--json"), '"version": "v2"'),
        (("history",), "promote v1 → v2"),
    ],
)
def test_status_and_history_on_a_store_with_a_champion_load_neither_torch_nor_transformers(
    tmp_path: Path, champion_store: str, args: tuple[str, ...], expected: str
) -> None:
    got, out = run_installed(tmp_path, *args, "--store", champion_store)
    assert got["code"] == 0, out
    assert expected in out
    assert got["heavy"] == []


def test_validate_help_loads_neither_torch_nor_transformers(tmp_path: Path) -> None:
    got, out = run_installed(tmp_path, "validate", "--help")
    assert got["code"] == 0
    assert "validate" in out.lower() and "--spec" in out
    assert got["heavy"] == []


def test_the_check_sees_torch_when_a_command_loads_it(tmp_path: Path, champion_store: str) -> None:
    """`export` builds the model from the base and its deltas: the same check reports torch for it, so the empty
    lists above are not an artefact of how modules are read back."""
    got, out = run_installed(tmp_path, "export", "v2", "--out", str(tmp_path / "exported"), "--store", champion_store)
    assert got["code"] == 0, out
    assert "torch" in got["heavy"]
