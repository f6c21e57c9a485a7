"""How fast the read-only commands answer: `skillgraft status` and `skillgraft history` against `python -c pass`.

    python benchmarks/cli_latency.py                 # writes benchmarks/results/cli_latency.{json,md}
    python benchmarks/cli_latency.py --repeats 30

The store is real and built once in a temporary directory before anything is timed: the built-in demo model
registered with its base snapshot, one version on it holding a real delta (two self-attention tensors changed), a
gate decision and metrics, promoted to champion — so `status` verifies every file's sha256 (its default) and
`history` prints a promotion. Each command runs as a user runs it: the installed `skillgraft` script in a fresh
process (no SKILLGRAFT_* variables, cwd the temporary directory), its output discarded. Measured per command: the
wall time of the whole process, `--repeats` times, the commands interleaved round by round after one warm-up round;
reported: median, min and every run, and the median's ratio to `python -c pass` (the interpreter's own start-up) measured
in the same rounds. A reference row, `python -c "import torch, transformers"`, is what a command that imports the
model stack pays before it prints a line. Separately (not timed), each command is run once more to read back which of
torch, transformers, great_expectations and prefect its process imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

OUT = Path(__file__).parent / "results"
HEAVY = ("torch", "transformers", "great_expectations", "prefect")

# Runs the installed console script as `python <script> ARGS` would, then prints the heavy modules its process holds.
_MODULES = """
import json, runpy, sys
script, args, wanted = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
sys.argv = [script, *args]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
print("\\nMODULES " + json.dumps(sorted({name.split(".")[0] for name in sys.modules} & wanted)))
"""


def build_store(root: Path) -> str:
    """The demo model with one promoted version, as the module docstring says; returns the champion's id."""
    import torch

    from skillgraft import steps
    from skillgraft.config import SkillgraftConfig
    from skillgraft.gate import decide
    from skillgraft.models import delta_to_bytes, extract_delta
    from skillgraft.refs import Manifest
    from skillgraft.registry import Registry
    from skillgraft.schemas import GatePolicy, RegressionReport, SuiteRow
    from skillgraft.store.local import LocalStore

    store = LocalStore(root)
    cfg = SkillgraftConfig(store=str(root))
    base = steps.ensure_model(store, cfg)
    reg = Registry(store, cfg.model, actor="benchmark")
    loaded = steps.load_version(reg, None)
    state = loaded.model.state_dict()
    before = {k: v.detach().clone() for k, v in state.items()}
    names = [n for n in state if ".self_attn." in n and n.endswith("_proj.weight")][:2]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in names:
            state[name].add_(torch.randn(state[name].shape, generator=generator) * 0.01)
    delta = extract_delta(before, loaded.model.state_dict())
    manifest = Manifest(model=cfg.model, version="pending", parent=None, base=base, recipe={"kind": "sa_proj"},
                        tasks=["first"])  # fmt: skip
    version = reg.create_version({steps.DELTA_FILE: delta_to_bytes(delta, {"parent": "base", "recipe": "sa_proj"})},
                                 manifest).version  # fmt: skip
    report = RegressionReport(champion="base", candidate=version, rows=[
        SuiteRow(task="first", new=True, metric="exact_match", n=40, champion=0.0, candidate=0.5)])  # fmt: skip
    decision = decide(report, GatePolicy())
    assert decision.promote, decision.reasons
    reg.attach(version, "metrics.json", report.model_dump_json(indent=2).encode())
    reg.attach(version, "decision.json", decision.model_dump_json(indent=2).encode())
    reg.promote(version, reason="gate passed vs base")
    return version


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return seconds


def heavy_modules(probe: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """Which of :data:`HEAVY` the process ``probe`` (a command that ends by printing ``MODULES [...]``) imported."""
    done = subprocess.run(probe, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("MODULES ")), None)
    if line is None:
        raise SystemExit(f"could not read the modules of {' '.join(probe)}: {done.stderr[-2000:]}")
    return json.loads(line.removeprefix("MODULES "))


def cli_probe(script: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-c", _MODULES, str(script), json.dumps(args), json.dumps(HEAVY)]


def python_probe(code: str) -> list[str]:
    report = f"import json, sys; print('MODULES ' + json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    return [sys.executable, "-c", f"{code}\n{report}"]


def markdown(rows: list[dict], meta: dict) -> str:
    out = [
        "# CLI latency",
        "",
        f"`{meta['command']}` — {meta['when']}, {meta['machine']}.",
        "",
        meta["note"],
        "",
        f"Wall time of the whole process, {meta['repeats']} interleaved runs each after one warm-up round; the store "
        f"holds the demo model with champion {meta['champion']}.",
        "",
        "| command | median (ms) | min (ms) | × `python -c pass` | heavy modules imported |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        heavy = ", ".join(r["heavy_modules"])
        out.append(f"| `{r['label']}` | {1000 * r['median_s']:.0f} | {1000 * r['min_s']:.0f} | "
                   f"{r['ratio_to_python']:.2f} | {heavy or 'none'} |")  # fmt: skip
    by = {r["name"]: r for r in rows}
    ref = by["import-torch"]
    out += [
        "",
        f"`skillgraft status` answers in {by['status']['median_s']:.2f} s (median), "
        f"{by['status']['ratio_to_python']:.1f}× the interpreter's own start-up; `skillgraft history` in "
        f"{by['history']['median_s']:.2f} s ({by['history']['ratio_to_python']:.1f}×). Importing torch and "
        f"transformers alone takes {ref['median_s']:.2f} s here ({ref['ratio_to_python']:.1f}×).",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per command (after one warm-up round)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--note", default="", help="appended to the note in the results (e.g. what else ran)")
    args = ap.parse_args()

    script = Path(sys.executable).parent / "skillgraft"
    if not script.is_file():
        raise SystemExit(f"the skillgraft command is not installed next to {sys.executable}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLGRAFT_")}
    with tempfile.TemporaryDirectory(prefix="skillgraft-cli-latency-") as tmp:
        cwd = Path(tmp)
        store = cwd / "store"
        champion = build_store(store)
        status, history = ["status", "--store", str(store)], ["history", "--store", str(store)]
        commands = [  # name, label, what is timed, what reads its modules back
            ("python", "python -c pass", [sys.executable, "-c", "pass"], python_probe("pass")),
            ("status", "skillgraft status", [str(script), *status], cli_probe(script, status)),
            ("history", "skillgraft history", [str(script), *history], cli_probe(script, history)),
            ("import-torch", 'python -c "import torch, transformers"', [sys.executable, "-c", "import torch, transformers"],
             python_probe("import torch, transformers")),
        ]  # fmt: skip
        runs: dict[str, list[float]] = {name: [] for name, *_ in commands}
        load_start = os.getloadavg()
        for round_ in range(args.repeats + 1):
            for name, _label, argv, _ in commands:
                seconds = timed(argv, cwd, env)
                if round_ > 0:  # round 0 warms the file cache
                    runs[name].append(seconds)
            if round_:
                print(f"round {round_:2d}: " + "  ".join(f"{n} {1000 * runs[n][-1]:.0f} ms" for n in runs))
        load_end = os.getloadavg()
        modules = {name: heavy_modules(probe, cwd, env) for name, _label, _argv, probe in commands}

    python_median = statistics.median(runs["python"])
    rows = []
    for name, label, _argv, _ in commands:
        med = statistics.median(runs[name])
        rows.append({
            "name": name, "label": label, "median_s": med, "min_s": min(runs[name]), "runs_s": runs[name],
            "ratio_to_python": med / python_median, "heavy_modules": modules[name],
        })  # fmt: skip

    busy = max(load_start[0], load_end[0]) > 0.5 * (os.cpu_count() or 1)
    note = (f"Measured once, in one run; load average {load_start[0]:.2f} at the start and {load_end[0]:.2f} at the "
            f"end on {os.cpu_count()} CPUs" + (" — other jobs were using this machine, so absolute times are noisy; "
                                                "compare the ratios, measured in the same rounds." if busy else ".")
            + (f" {args.note}" if args.note else ""))  # fmt: skip
    meta = {
        "command": "python benchmarks/cli_latency.py" + (f" --repeats {args.repeats}" if args.repeats != 15 else ""),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": describe(),
        "repeats": args.repeats,
        "champion": champion,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "note": note,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cli_latency.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "cli_latency.md").write_text(markdown(rows, meta) + "\n")
    print(f"wrote {args.out / 'cli_latency.json'} and {args.out / 'cli_latency.md'}")


if __name__ == "__main__":
    main()
