"""How fast, and in how much memory, the intake takes a large JSON Lines file, next to `datasets`' own JSON loader.

    python benchmarks/intake_stream.py                      # 10k, 100k and 1M rows; writes results/intake_stream.*
    python benchmarks/intake_stream.py --rows 10000 100000

For each size a JSONL file of ``{"prompt", "answer"}`` rows (arithmetic questions, each prompt distinct, about 76 bytes
a row) is written to a temporary directory, then two fresh Python processes run one after the other on it:

- **skillgraft**: a task is registered on a LocalStore, the file is submitted and ingested (``Intake.submit`` +
  ``Intake.ingest``: read, split, GX validation chunk by chunk, leakage against the key index, the batch written and
  read back). It must be accepted.
- **datasets**: ``datasets.load_dataset("json", data_files=..., split="train")`` with a fresh cache directory (it
  parses the file into Arrow and writes its cache; no validation).

Measured in each child: wall time of the work (imports excluded) and the peak resident set size of the process
(``ru_maxrss``, imports included). Ratios are skillgraft / datasets, measured side by side in the same run. The
figures vary with the machine and its load. The run exits 1 when the intake's peak RSS passes 2 GiB at any size.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe

OUT = Path(__file__).parent / "results"
LIMIT_MIB = 2048
"""The intake's peak RSS must stay under this at every size (1,000,000 rows included); the run fails otherwise."""

SKILLGRAFT = r"""
import json, resource, sys, tempfile, time
from skillgraft.data import Intake, TaskSpec
from skillgraft.store import LocalStore
import great_expectations  # imported before the clock starts, like datasets below
intake = Intake(LocalStore(tempfile.mkdtemp(dir=sys.argv[2])))
intake.register_task(TaskSpec(name="add", answer_type="number"))
start = time.perf_counter()
intake.submit("add", sys.argv[1])
(result,) = intake.ingest("add")
seconds = time.perf_counter() - start
assert result.status == "accepted", result.message
print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": result.report.rows, "chunks": max(1, len(result.report.chunks))}))
"""

DATASETS = r"""
import json, resource, sys, tempfile, time
import datasets
datasets.disable_progress_bars()
start = time.perf_counter()
ds = datasets.load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=tempfile.mkdtemp(dir=sys.argv[2]))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": len(ds)}))
"""


def write_file(path: Path, rows: int) -> int:
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(rows):
            a, b = rng.randrange(10**6), rng.randrange(10**6)
            f.write(json.dumps({"prompt": f"What is {a} plus {b}? (item {i})", "answer": str(a + b)}) + "\n")
    return path.stat().st_size


def child(code: str, path: Path, work: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), str(work)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    if out.returncode:
        raise SystemExit(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for rows in args.rows:
            path = work / f"rows-{rows}.jsonl"
            size = write_file(path, rows)
            ours, theirs = child(SKILLGRAFT, path, work), child(DATASETS, path, work)
            assert ours["rows"] == theirs["rows"] == rows
            entry = {
                "rows": rows,
                "file_mib": round(size / 2**20, 1),
                "skillgraft": {**ours, "rows_per_s": rows / ours["seconds"]},
                "datasets": {**theirs, "rows_per_s": rows / theirs["seconds"]},
                "time_ratio": ours["seconds"] / theirs["seconds"],
                "rss_ratio": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
            }
            results.append(entry)
            print(json.dumps(entry), flush=True)
            path.unlink()
    from importlib.metadata import version

    import datasets

    record = {
        "machine": describe(),
        "skillgraft": version("skillgraft"),
        "datasets": datasets.__version__,
        "results": results,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "intake_stream.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Intake of a large JSONL file vs `datasets`' JSON loader",
        "",
        f"Machine: {record['machine']}; datasets {record['datasets']}. Command: `python benchmarks/intake_stream.py`. "
        "Figures vary with the machine and its load.",
        "",
        "| rows | file | skillgraft rows/s | skillgraft peak RSS | datasets rows/s | datasets peak RSS | time × | RSS × |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in results:
        s, d = e["skillgraft"], e["datasets"]
        lines.append(
            f"| {e['rows']:,} | {e['file_mib']} MiB | {s['rows_per_s']:,.0f} | {s['peak_rss_mib']:,.0f} MiB "
            f"| {d['rows_per_s']:,.0f} | {d['peak_rss_mib']:,.0f} MiB | {e['time_ratio']:.1f} | {e['rss_ratio']:.2f} |"
        )
    lines += [
        "",
        "skillgraft validates (GX suite per chunk of 50,000 rows, duplicates and leakage over the whole file), splits "
        "and stores the batch; `datasets` only parses into Arrow. Peak RSS includes each library's imports.",
    ]
    (OUT / "intake_stream.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    over = [e["rows"] for e in results if e["skillgraft"]["peak_rss_mib"] > LIMIT_MIB]
    if over:
        raise SystemExit(f"the intake went over {LIMIT_MIB} MiB of RSS at {over} rows")


if __name__ == "__main__":
    main()
