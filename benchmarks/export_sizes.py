"""How many bytes each way of shipping a LoRA version takes: its PEFT adapter, its merged delta, a full checkpoint.

    python benchmarks/export_sizes.py              # writes benchmarks/results/export_sizes.{json,md}
    python benchmarks/export_sizes.py --steps 5

For each model and adapter rank, a real store is built in a temporary directory: the model registered as the base
(the built-in demo model, snapshotted; or a config-built Llama saved as a local Hugging Face directory — nothing is
downloaded), one lora version trained on it through ``skillgraft.steps.train_candidate`` (the demo's ``first`` task,
``--steps`` optimizer steps on sa_proj: q/k/v/o of every layer), then exported both ways through
``skillgraft.steps.export``. Measured: the bytes of the version's adapter files and of its merged delta
(``delta.safetensors``) as stored, the bytes of the merged export (a full checkpoint: ``model.safetensors`` and the
whole directory), and the wall time of each export. The byte counts follow from the shapes (they do not depend on the
machine); the times vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

OUT = Path(__file__).parent / "results"

LARGER = {
    "vocab_size": 32000,
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
"""The config-built larger model: a Llama with hidden 512 and 8 layers (about 58 M parameters, float32)."""


def larger_base(root: Path) -> Path:
    """The larger Llama, seeded, saved with the demo tokenizer (its ids fit the vocabulary) as a local directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from skillgraft import demo
    from skillgraft.models import save_pretrained_dir

    torch.manual_seed(0)
    tokenizer = demo.build_tokenizer()
    config = LlamaConfig(**LARGER, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    return save_pretrained_dir(LlamaForCausalLM(config), tokenizer, root / "llama-512x8")


def measure(name: str, base: str, rank: int, steps: int, root: Path) -> dict:
    from skillgraft import demo, layout
    from skillgraft import steps as core
    from skillgraft.config import SkillgraftConfig
    from skillgraft.data import Intake
    from skillgraft.registry import Registry
    from skillgraft.store.local import LocalStore

    store_dir = root / f"store-{name}-r{rank}"
    store = LocalStore(store_dir)
    cfg = SkillgraftConfig(
        store=str(store_dir), base=base, recipe={"kind": "lora", "r": rank, "alpha": 2 * rank},
        train={"steps": steps, "learning_rate": 1e-3, "batch_size": 8, "progress": False},
    )  # fmt: skip
    core.ensure_model(store, cfg)
    intake = Intake(store)
    intake.register_task(demo.SPECS["first"])
    batch = intake.accept_examples("first", demo.generate("first", 80, seed=0), "first.jsonl")
    t0 = time.perf_counter()
    cand = core.train_candidate(store, cfg, [batch])
    trained = time.perf_counter() - t0
    version = cand.candidate.version
    manifest = Registry(store, cfg.model).manifest(version)
    assert manifest.adapter is not None, "a lora version stores its adapter"
    timings = {}
    dirs = {}
    for fmt in ("adapter", "merged"):
        dirs[fmt] = root / f"export-{name}-r{rank}-{fmt}"
        t0 = time.perf_counter()
        core.export(store, cfg.model, version, dirs[fmt], format=fmt)
        timings[fmt] = time.perf_counter() - t0
    adapter_bytes = sum(manifest.files[f].size for f in layout.ADAPTER_FILES)
    delta_bytes = manifest.files[layout.DELTA].size
    full_weights = (dirs["merged"] / "model.safetensors").stat().st_size
    full_dir = sum(p.stat().st_size for p in dirs["merged"].rglob("*") if p.is_file())
    adapter_dir = sum(p.stat().st_size for p in dirs["adapter"].rglob("*") if p.is_file())
    return {
        "model": name,
        "rank": rank,
        "base_parameters": cand.total_parameters - cand.trainable_parameters,  # the PeftModel counted its adapter
        "adapter_parameters": cand.trainable_parameters,
        "adapter_bytes": adapter_bytes,
        "adapter_weights_bytes": manifest.files[layout.ADAPTER_WEIGHTS].size,
        "delta_bytes": delta_bytes,
        "delta_tensors": len(manifest.training.trained_tensors) if manifest.training else None,
        "full_checkpoint_bytes": full_weights,
        "merged_export_dir_bytes": full_dir,
        "adapter_export_dir_bytes": adapter_dir,
        "train_s": round(trained, 2),
        "export_adapter_s": round(timings["adapter"], 3),
        "export_merged_s": round(timings["merged"], 3),
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f}" if n < 1e7 else f"{n / 1e6:,.1f}"


def markdown(rows: list[dict], meta: dict) -> str:
    out = [
        "# Export sizes: adapter, merged delta, full checkpoint",
        "",
        f"`{meta['command']}` — {meta['when']}, {meta['machine']}.",
        "",
        meta["note"],
        "",
        "One lora version per row (sa_proj targets, alpha = 2 × rank), trained on the base for "
        f"{meta['steps']} steps; sizes in MB (10^6 bytes) as stored in the version or written by `skillgraft export`.",
        "",
        "| model | params | rank | adapter (MB) | merged delta (MB) | full checkpoint (MB) | delta / adapter | "
        "full / adapter | export adapter (s) | export merged (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['base_parameters'] / 1e6:.2f} M | {r['rank']} | {_mb(r['adapter_bytes'])} | "
            f"{_mb(r['delta_bytes'])} | {_mb(r['full_checkpoint_bytes'])} | "
            f"{r['delta_bytes'] / r['adapter_bytes']:.0f}× | {r['full_checkpoint_bytes'] / r['adapter_bytes']:.0f}× | "
            f"{r['export_adapter_s']:.2f} | {r['export_merged_s']:.2f} |"
        )
    out += [
        "",
        "- **adapter**: `adapter_config.json` + `adapter_model.safetensors`, the version's adapter files "
        "(`skillgraft export --format adapter` writes them unchanged, plus its README.md and skillgraft.json).",
        "- **merged delta**: `delta.safetensors`, the whole new value of every tensor the merge changed (every q/k/v/o "
        "projection here): what the version chain loads.",
        "- **full checkpoint**: `model.safetensors` of the merged export (`skillgraft export`, the default format).",
        "",
        "Byte counts follow from the shapes and the rank, not from the machine; the export times are one run each on "
        "this machine and vary with it and its load (the merged export loads the base and the chain and writes every "
        "weight; the adapter export copies two checked files).",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps of each lora version")
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from skillgraft import demo

    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="skillgraft-export-sizes-") as tmp:
        root = Path(tmp)
        bases = {"demo": demo.BASE_SOURCE, "llama-512x8": str(larger_base(root))}
        for name, base in bases.items():
            for rank in args.ranks:
                rows.append(measure(name, base, rank, args.steps, root))
                print(json.dumps(rows[-1]), file=sys.stderr)
    load_end = os.getloadavg()
    meta = {
        "command": "python benchmarks/export_sizes.py" + (f" --steps {args.steps}" if args.steps != 10 else ""),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{describe()}, torch {torch.__version__}",
        "steps": args.steps,
        "ranks": args.ranks,
        "larger_config": LARGER,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "note": f"Measured once, in one run, on a machine shared with other work (load average {load_start[0]:.2f} "
        f"at the start and {load_end[0]:.2f} at the end on {os.cpu_count()} CPUs): the times vary; the sizes do not.",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "export_sizes.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (OUT / "export_sizes.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
