"""One process against two DDP processes (gloo) on this CPU: step time of the same fine-tune, same global batch.

    python benchmarks/distributed_cpu.py                  # writes benchmarks/results/distributed_cpu.{json,md}
    python benchmarks/distributed_cpu.py --steps 40 --repeats 3

The model is config-built (no download): a Llama with hidden 256, 4 layers, 8 heads, vocabulary of the demo tokenizer,
trained with SA Proj on the demo's `first` task, global batch 16, seeded. Each repeat runs the one-process Trainer and
then the two-rank fine-tune (skillgraft.distributed), interleaved. Measured: the seconds the ranks spent in their
optimizer steps (the TrainingRecord's `seconds`, rank 0) divided by the steps, and the wall time of the whole call,
which for two ranks includes spawning them (a fresh interpreter each, importing torch and transformers) and handing
the result back. On a 2-core machine two ranks share the cores a single process would use all of, so no speed-up is
expected here: this records the cost of the distributed path, and that its delta matches (max |Δ| reported). On GPUs
each rank has its own device. Figures vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results"


def build(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=128,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    return LlamaForCausalLM(cfg)


def once(processes: int, steps: int, batch: int) -> dict:
    from skillgraft import demo
    from skillgraft.recipes import parse_recipe
    from skillgraft.train import TrainConfig, fine_tune

    tokenizer = demo.build_tokenizer()
    model = build(tokenizer)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(steps=steps, batch_size=batch, learning_rate=5e-4, progress=False, device="cpu",
                      processes=processes)  # fmt: skip
    t0 = time.perf_counter()
    out = fine_tune(model, tokenizer, demo.generate("first", 256, seed=0), parse_recipe("sa_proj"), cfg)
    wall = time.perf_counter() - t0
    state = out.model.state_dict()
    delta = {k: (state[k] - start[k]) for k in start if not torch.equal(state[k], start[k])}
    return {"processes": processes, "step_s": out.record.seconds / out.record.steps, "wall_s": wall,
            "delta": delta}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows: dict[int, list[dict]] = {1: [], 2: []}
    worst = 0.0
    for r in range(args.repeats):
        one = once(1, args.steps, args.batch)
        two = once(2, args.steps, args.batch)
        worst = max(worst, max(float((one["delta"][k] - two["delta"][k]).abs().max()) for k in one["delta"]))
        for row in (one, two):
            rows[row["processes"]].append({k: round(v, 4) for k, v in row.items() if k in ("step_s", "wall_s")})
        print(f"repeat {r + 1}: 1 process {one['step_s']:.4f} s/step, 2 processes {two['step_s']:.4f} s/step")
    med = {p: {k: statistics.median(x[k] for x in rows[p]) for k in ("step_s", "wall_s")} for p in rows}
    result = {
        "benchmark": "distributed_cpu",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, torch {torch.__version__}",
        "model": "LlamaForCausalLM hidden 256, 4 layers (config-built), sa_proj, demo task first",
        "steps": args.steps, "global_batch": args.batch, "repeats": args.repeats,
        "median": med, "runs": rows,
        "step_time_ratio_2_vs_1": round(med[2]["step_s"] / med[1]["step_s"], 3),
        "max_abs_delta_difference": worst,
    }  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "distributed_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# One process vs two DDP processes (gloo) on CPU",
        "",
        f"Machine: {result['machine']}. {result['model']}; {args.steps} steps, global batch {args.batch}, "
        f"median of {args.repeats} interleaved repeats. Command: `python benchmarks/distributed_cpu.py`. "
        "Figures vary with the machine and its load.",
        "",
        "| processes | s / optimizer step | wall s (whole call, incl. spawning ranks) |",
        "|---:|---:|---:|",
        *(f"| {p} | {med[p]['step_s']:.4f} | {med[p]['wall_s']:.1f} |" for p in (1, 2)),
        "",
        f"Step time, 2 processes / 1 process: **{result['step_time_ratio_2_vs_1']}×**. Largest difference between "
        f"the two deltas: {worst:.2e} (same global batch, loss normalised by its answer-token count).",
        "",
        "On this CPU the two ranks split the same cores one process uses, and gloo adds an all-reduce per step, so "
        "the distributed path costs time here; it exists for machines with one GPU per rank.",
        "",
    ]
    (OUT / "distributed_cpu.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
