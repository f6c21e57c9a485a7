"""A vision-language model through the whole loop: `skillgraft run` on an image + prompt task with a tiny LLaVA
(saved as a Hugging Face directory with its processor), under Prefect; then a text task on the same model, whose
replay mixes the old image examples into the batches, must not make it forget the pictures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from vlm_fixtures import COLOUR_SPEC, COLOURS, picture, save_llava, write_colour_task

from skillgraft.data import Intake
from skillgraft.evaluate import predict_examples
from skillgraft.models import delta_from_bytes, load_model
from skillgraft.recipes import architecture_for
from skillgraft.registry import Registry
from skillgraft.store import LocalStore
from skillgraft.vision import ImageExample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


def skillgraft(*args: str) -> subprocess.CompletedProcess:
    """The installed `skillgraft` command, as a user runs it, reporting to the test's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    cmd = [str(Path(sys.executable).parent / "skillgraft"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_skillgraft_run_teaches_a_vlm_an_image_task_and_then_a_text_task_without_forgetting(harness, tmp_path):
    base = save_llava(tmp_path / "llava")
    store_dir = tmp_path / "store"
    config = tmp_path / "skillgraft.yaml"
    config.write_text(yaml.safe_dump({
        "store": str(store_dir), "model": "vlm", "base": str(base),
        "train": {"steps": 200, "learning_rate": 1e-2, "batch_size": 12, "progress": False},
        "suite": {"max_eval_examples": 40, "probe_prompts": 16, "smoke_examples": 16},
    }))  # fmt: skip
    spec = tmp_path / "colour.yaml"
    spec.write_text(yaml.safe_dump(COLOUR_SPEC))
    data = write_colour_task(tmp_path / "data", 150)

    run = skillgraft("run", "colour", str(data), "--spec", str(spec), "--config", str(config))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "outcome: promoted; champion of vlm: v1" in run.stdout

    store = LocalStore(store_dir)
    reg = Registry(store, "vlm")
    metrics = json.loads(reg.read_attachment("v1", "metrics.json"))
    (row,) = metrics["rows"]
    assert row["task"] == "colour" and row["champion"] <= 0.4 and row["candidate"] >= 0.9  # learned from the pictures
    # SA Proj of the language model only: the vision tower and projector are not in the delta at all
    delta, _ = delta_from_bytes(reg.read_file("v1", "delta.safetensors"))
    arch = architecture_for("llava")
    assert delta and all(".language_model.layers." in k and ".self_attn." in k for k in delta)
    assert not any(arch.frozen_prefix(k) for k in delta)
    assert {k.rsplit(".", 2)[-2] for k in delta} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert Intake(store).incoming() == [] and Intake(store).landed_images("colour") == []

    # a text task next: replay (0.75) puts old image examples beside text ones in the same batches
    text = tmp_path / "data" / "say.jsonl"
    text.write_text("".join(json.dumps({"prompt": f"say : {c}", "answer": c}) + "\n" for c in "abcdefgh" * 1)
                    + "".join(json.dumps({"prompt": f"say : {c} {d}", "answer": c}) + "\n"
                              for c in "abcdefgh" for d in "0123456789"))  # fmt: skip
    say_spec = tmp_path / "say.yaml"
    say_spec.write_text(yaml.safe_dump({"name": "say", "max_new_tokens": 2}))
    second = skillgraft("run", "say", str(text), "--spec", str(say_spec), "--config", str(config))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "outcome: promoted; champion of vlm: v2" in second.stdout
    metrics = json.loads(reg.read_attachment("v2", "metrics.json"))
    rows = {r["task"]: r for r in metrics["rows"]}
    assert metrics["probe"]["prompts"] == 16 and metrics["probe"]["kl"] is not None  # old image prompts, probed
    assert rows["say"]["candidate"] >= rows["say"]["champion"] + 0.3  # learned the text task
    assert rows["colour"]["champion"] >= 0.9  # the image task was scored, with its pictures, on both models
    assert rows["colour"]["candidate"] >= rows["colour"]["champion"] - 0.05  # and not forgotten

    # the exported champion is a plain Hugging Face VLM directory: processor included, pictures answered
    out = tmp_path / "export"
    exported = skillgraft("export", "--out", str(out), "--store", str(store_dir), "--model", "vlm")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    loaded = load_model(str(out))
    rng = np.random.default_rng(7)
    fresh = [ImageExample("what colour is this picture ?", c, picture(c, rng)) for c in list(COLOURS) * 4]
    preds = predict_examples(loaded.model, loaded.tokenizer, fresh, max_new_tokens=2)
    assert sum(p == ex.answer for p, ex in zip(preds, fresh)) >= 11
    assert type(loaded.tokenizer).__name__ == "LlavaProcessor" and isinstance(loaded.model, torch.nn.Module)
