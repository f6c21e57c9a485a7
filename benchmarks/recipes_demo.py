"""Learning vs forgetting per recipe on the demo: one champion, one new-task batch, every recipe, side by side.

    python benchmarks/recipes_demo.py            # writes benchmarks/results/recipes_demo.{json,md}

Bootstraps the demo model on its old tasks (first, last, max) once, then trains a candidate from that same champion on
the numeric `count` task with each recipe, with and without replay of old-task data, and runs the regression suite and
the gate on each (no promotion, so every candidate is compared with the same champion). All numbers are measured in
this run, on this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from skillgraft import demo, steps
from skillgraft.config import SkillgraftConfig
from skillgraft.data import Intake
from skillgraft.recipes import parse_recipe
from skillgraft.registry import Registry
from skillgraft.store import LocalStore

RECIPES = ("sa_proj", "mlp_gate_up", "lora", "full")
OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replay", type=float, nargs="+", default=[0.0, 0.75])
    ap.add_argument("--steps", type=int, default=None, help="retrain steps (default: the config default)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        cfg = SkillgraftConfig(store=tmp, model=demo.MODEL_NAME, base=demo.BASE_SOURCE)
        if args.steps:
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": args.steps})})
        cfg.train.progress = cfg.bootstrap_train.progress = False
        intake = Intake(store)
        for spec in demo.SPECS.values():
            intake.register_task(spec)
        steps.ensure_model(store, cfg)
        old = [intake.accept_examples(t, demo.generate(t, demo.ROWS, seed=0), f"{t}-0.jsonl") for t in demo.OLD_TASKS]
        t0 = time.perf_counter()
        boot = steps.train_candidate(store, cfg, old, bootstrap=True)
        report = steps.evaluate_candidate(store, cfg, boot)
        decision = steps.gate(store, cfg, boot, report)
        Registry(store, cfg.model).promote(
            boot.candidate.version, reason="benchmark bootstrap", force=not decision.promote
        )
        print(f"bootstrap v1 in {time.perf_counter() - t0:.0f}s: " +
              ", ".join(f"{r.task} {r.candidate:.3f}" for r in report.rows), flush=True)  # fmt: skip
        batch = intake.accept_examples("count", demo.generate("count", demo.NEW_ROWS, seed=0), "count-0.jsonl")
        rows = []
        for replay in args.replay:
            for name in RECIPES:
                run_cfg = cfg.model_copy(update={"recipe": parse_recipe(name), "replay": replay})
                cand = steps.train_candidate(store, run_cfg, [batch])
                rep = steps.evaluate_candidate(store, run_cfg, cand)
                dec = steps.gate(store, run_cfg, cand, rep)
                steps.reject(store, run_cfg, cand, dec)  # keep v1 champion: every candidate faces the same baseline
                reg = Registry(store, cfg.model)
                delta_bytes = reg.manifest(cand.candidate.version).files[steps.DELTA_FILE].size
                row = {
                    "recipe": name,
                    "replay": replay,
                    "trainable_parameters": cand.trainable_parameters,
                    "trainable_percent": round(100 * cand.trainable_parameters / cand.total_parameters, 2),
                    "train_seconds": round(cand.seconds, 2),
                    "new_task_gain": round(rep.row("count").delta, 4),
                    "new_task_score": round(rep.row("count").candidate, 4),
                    "old_task_change": {r.task: round(r.delta, 4) for r in rep.rows if not r.new},
                    "number_mass": {
                        "champion": round(rep.probe.champion, 5),
                        "candidate": round(rep.probe.candidate, 5),
                    },
                    "delta_bytes": delta_bytes,
                    "decision": dec.verdict,
                    "reasons": [r for r in dec.reasons if r.startswith("FAIL")],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        result = {
            "command": "python benchmarks/recipes_demo.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, device {'cuda' if torch.cuda.is_available() else 'cpu'}",
            "champion": {r.task: round(r.candidate, 4) for r in report.rows},
            "train": cfg.train.model_dump(exclude={"progress"}),
            "gate": cfg.gate.model_dump(),
            "total_parameters": boot.total_parameters,
            "rows": rows,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recipes_demo.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "recipes_demo.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    tasks = list(result["rows"][0]["old_task_change"]) if result["rows"] else []
    head = ["recipe", "replay", "trainable params", "train s", "count gain", *[f"Δ {t}" for t in tasks],
            "number mass (old prompts)", "delta file", "gate"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        nm = r["number_mass"]
        lines.append("| " + " | ".join([
            f"`{r['recipe']}`", f"{r['replay']:.2f}", f"{r['trainable_parameters']:,} ({r['trainable_percent']}%)",
            f"{r['train_seconds']:.1f}", f"{r['new_task_gain']:+.3f}",
            *[f"{r['old_task_change'][t]:+.3f}" for t in tasks],
            f"{nm['champion']:.4f} → {nm['candidate']:.4f}", f"{r['delta_bytes'] / 1024:.0f} KiB", r["decision"],
        ]) + " |")  # fmt: skip
    champ = ", ".join(f"{t} {v:.3f}" for t, v in result["champion"].items())
    t = result["train"]
    return (
        f"Command: `{result['command']}`  \nMachine: {result['machine']}  \n"
        f"Champion v1 (bootstrap, full fine-tune of the bare demo model): {champ}; "
        f"{result['total_parameters']:,} parameters.  \n"
        f"Retrain: {t['steps']} steps, lr {t['learning_rate']}, batch {t['batch_size']}, seed {t['seed']}; "
        f"gate min_gain {result['gate']['min_gain']}, max_drop {result['gate']['max_drop']}.\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
