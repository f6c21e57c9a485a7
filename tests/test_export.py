"""Exports of real LoRA versions of the demo model, through the CLI: the adapter a lora version stores beside its
merged delta, `skillgraft export --format adapter` loading with PeftModel.from_pretrained on the parent's weights and
generating exactly what the merged export generates, and the model card the Hugging Face hub library parses."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version as installed
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from typer.testing import CliRunner

from skillgraft import demo, layout, steps
from skillgraft.cli import app
from skillgraft.config import SkillgraftConfig
from skillgraft.data import Intake
from skillgraft.models import load_model
from skillgraft.registry import Registry
from skillgraft.store import LocalStore

FLOW_RUN = "5b0c1d7e-0a4f-4a53-9a43-3f1d2b7c9e10"
ADAPTER_DIR_FILES = {layout.ADAPTER_CONFIG, layout.ADAPTER_WEIGHTS, layout.EXPORT_CARD, layout.EXPORT_PROVENANCE}


@dataclass
class Lora:
    root: Path
    store: LocalStore
    reg: Registry
    tasks: dict[str, str]  # version -> the task it was trained on


@pytest.fixture(scope="module")
def lora(tmp_path_factory) -> Lora:
    """The demo model with two real LoRA versions: v1 on the base (task `first`, trained inside a flow run: its id
    is passed as the Prefect task passes it) and v2 on v1 (task `count`); each scored and gated like a run does."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lora-store")
    store = LocalStore(root)
    cfg = SkillgraftConfig(
        store=str(root), recipe={"kind": "lora", "r": 4, "alpha": 8},
        train={"steps": 60, "batch_size": 8, "learning_rate": 3e-3, "progress": False},
        suite={"max_eval_examples": 24, "probe_prompts": 8, "smoke_examples": 8},
    )  # fmt: skip
    steps.ensure_model(store, cfg)
    intake = Intake(store)
    reg = Registry(store, cfg.model)
    tasks = {}
    for task, run_id in (("first", FLOW_RUN), ("count", None)):
        intake.register_task(demo.SPECS[task])
        batch = intake.accept_examples(task, demo.generate(task, 160, seed=3), f"{task}.jsonl")
        cand = steps.train_candidate(store, cfg, [batch], flow_run_id=run_id)
        report = steps.evaluate_candidate(store, cfg, cand)
        steps.gate(store, cfg, cand, report)
        reg.promote(cand.candidate.version, reason="test: the next version trains on this one", force=True)
        tasks[cand.candidate.version] = task
    assert tasks == {"v1": "first", "v2": "count"}
    return Lora(root=root, store=store, reg=reg, tasks=tasks)


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli(store: LocalStore, *args: str) -> Run:
    result = CliRunner().invoke(app, [*args, "--store", str(store.root)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, " ".join(result.stdout.split()), " ".join(result.stderr.split()))


def greedy(model, tokenizer, prompts: list[str], max_new_tokens: int = 4) -> list[list[int]]:
    """The greedy continuation of each prompt, as token ids (one prompt at a time: no padding in the way)."""
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)  # fmt: skip
            out.append(gen[0, ids.shape[1] :].tolist())
    return out


# --- what a lora version stores ---------------------------------------------------------------------------------------


def test_a_lora_version_stores_its_peft_adapter_beside_the_merged_delta(lora: Lora) -> None:
    for version, applies_to, name in (("v1", "base", demo.BASE_SOURCE), ("v2", "v1", "demo@v1")):
        m = lora.reg.manifest(version)
        assert set(m.files) == {layout.DELTA, layout.ADAPTER_CONFIG, layout.ADAPTER_WEIGHTS}
        assert m.adapter is not None and (m.adapter.applies_to, m.adapter.base_model_name_or_path) == (applies_to, name)
        assert m.adapter.strength == 1.0 and m.adapter.files == [layout.ADAPTER_CONFIG, layout.ADAPTER_WEIGHTS]
        config = json.loads(lora.reg.read_file(version, layout.ADAPTER_CONFIG))  # checked against the manifest
        assert config["peft_type"] == "LORA" and (config["r"], config["lora_alpha"]) == (4, 8)
        assert config["base_model_name_or_path"] == name
        assert config["target_modules"] == sorted(config["target_modules"]) and config["target_modules"]
        weights = load_safetensors(lora.reg.read_file(version, layout.ADAPTER_WEIGHTS))  # safetensors, no pickle
        assert {k.split(".lora_")[1] for k in weights} == {"A.weight", "B.weight"}
        assert any(v.abs().sum() > 0 for k, v in weights.items() if ".lora_B." in k)  # trained, not the zero init
        assert m.software == {p: installed(p) for p in ("skillgraft", "torch", "transformers", "peft")}
    assert lora.reg.manifest("v1").flow_run_id == FLOW_RUN and lora.reg.manifest("v2").flow_run_id is None
    assert lora.reg.verify("v2") == []
    # the chain still loads from the merged deltas: v2 = base + v1's delta + v2's delta
    assert steps.chain(lora.reg, "v2") == ["v1", "v2"]


# --- export both ways ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_adapter_on_the_parent_weights_generates_what_the_merged_export_generates(
    lora: Lora, version: str, tmp_path: Path
) -> None:
    from peft import PeftModel

    merged_dir, adapter_dir = tmp_path / "merged", tmp_path / "adapter"
    run = cli(lora.store, "export", version, "--out", str(merged_dir))
    assert run.code == 0 and "(merged)" in run.out, run.err
    run = cli(lora.store, "export", version, "--format", "adapter", "--out", str(adapter_dir))
    assert run.code == 0 and "(adapter)" in run.out, run.err
    assert {p.name for p in adapter_dir.iterdir()} == ADAPTER_DIR_FILES
    for name in (layout.ADAPTER_CONFIG, layout.ADAPTER_WEIGHTS):  # the stored bytes, unchanged
        assert (adapter_dir / name).read_bytes() == lora.reg.read_file(version, name)

    parent_version = lora.reg.manifest(version).parent
    if parent_version is None:  # the base: the snapshot the store keeps
        parent = steps.load_base(lora.reg)
    else:  # a version: its merged export, as the card tells a user to make it
        parent_dir = tmp_path / "parent"
        assert cli(lora.store, "export", parent_version, "--out", str(parent_dir)).code == 0
        parent = load_model(str(parent_dir))
    tokenizer = parent.tokenizer
    intake = Intake(lora.store)
    prompts = [ex.prompt for task in ("first", "count") for ex in intake.eval_set(task)]
    assert len(prompts) >= 40
    before = greedy(parent.model, tokenizer, prompts)

    merged = load_model(str(merged_dir)).model
    adapted = PeftModel.from_pretrained(parent.model, str(adapter_dir))
    adapted.eval()
    assert greedy(adapted, tokenizer, prompts) == greedy(merged, tokenizer, prompts)
    assert greedy(adapted, tokenizer, prompts) != before  # the adapter changes what the parent says
    ids = tokenizer(prompts[:8], return_tensors="pt", padding=True)
    with torch.no_grad():
        got, want = adapted(**ids).logits, merged(**ids).logits
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_export_cards_parse_with_the_hub_library_and_carry_the_stored_scores(lora: Lora, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from skillgraft.evaluate import RegressionReport
    from skillgraft.gate import Decision

    report = RegressionReport.model_validate_json(lora.reg.read_attachment("v1", layout.METRICS))
    decision = Decision.model_validate_json(lora.reg.read_attachment("v1", layout.DECISION))
    assert decision.checks
    for fmt, library in (("merged", "transformers"), ("adapter", "peft")):
        out = tmp_path / fmt
        assert cli(lora.store, "export", "v1", "--format", fmt, "--out", str(out)).code == 0
        card = ModelCard((out / layout.EXPORT_CARD).read_text(), ignore_metadata_errors=False)
        data = card.data
        assert data.base_model == demo.BASE_SOURCE and data.library_name == library
        assert {"skillgraft", "continual-learning", "lora"} <= set(data.tags)
        assert data.model_name == "demo-v1"
        got = {(r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results}
        assert got == {(row.task, row.metric): round(row.candidate, 4) for row in report.rows}
        meta = data.to_dict()["skillgraft"]
        assert meta["gate"]["verdict"] == decision.verdict and meta["gate"]["against"] == "base"
        assert [c["passed"] for c in meta["gate"]["checks"]] == [c.passed for c in decision.checks if c.decides]
        assert meta["flow_run_id"] == FLOW_RUN and meta["chain"] == ["v1"] and meta["format"] == fmt
        assert meta["trained_with"]["peft"] == installed("peft") == meta["exported_with"]["peft"]
        assert f"Prefect flow run: {FLOW_RUN}" in card.text and "## Decision" in card.text
        assert "PeftModel.from_pretrained" in card.text if fmt == "adapter" else "AutoModelForCausalLM" in card.text

        provenance = json.loads((out / layout.EXPORT_PROVENANCE).read_text())
        assert (provenance["model"], provenance["version"], provenance["format"]) == ("demo", "v1", fmt)
        assert provenance["lineage"]["flow_run_id"] == FLOW_RUN
        assert provenance["lineage"]["exported_with"]["torch"] == installed("torch")
        on_disk = {p.name for p in out.iterdir()} - {layout.EXPORT_PROVENANCE}
        assert set(provenance["files"]) == on_disk
        for name, entry in provenance["files"].items():
            assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()


def test_the_adapter_card_of_a_later_version_says_which_weights_it_needs(lora: Lora, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    out = tmp_path / "adapter"
    assert cli(lora.store, "export", "v2", "--format", "adapter", "--out", str(out)).code == 0
    card = ModelCard((out / layout.EXPORT_CARD).read_text(), ignore_metadata_errors=False)
    assert card.data.to_dict()["skillgraft"]["adapter_applies_to"] == "demo@v1"
    assert "skillgraft export v1 --model demo --out PARENT_DIR" in card.text
    assert card.data.to_dict()["skillgraft"]["flow_run_id"] is None
    assert "Prefect flow run: none recorded" in card.text


# --- errors ----------------------------------------------------------------------------------------------------------


def test_adapter_export_of_a_version_without_one_is_one_line_through_the_installed_command(
    local_store, demo_registry, tmp_path: Path
) -> None:
    demo_registry(local_store, versions=2, champion="v1")  # sa_proj versions: no adapter
    out = tmp_path / "adapter"
    command = [str(Path(sys.executable).parent / "skillgraft"), "export", "v2", "--format", "adapter", "--out",
               str(out), "--store", str(local_store.root)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env={"OMP_NUM_THREADS": "1",
                         "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)})  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    err = " ".join(run.stderr.split())
    assert err.startswith("error: demo@v2 was trained with the sa_proj recipe, which makes no adapter")
    assert "--format merged" in err and "nothing was written" in err and "Traceback" not in run.stderr
    assert not out.exists() and list(tmp_path.glob(".adapter.partial-*")) == []

    run2 = cli(local_store, "export", "v2", "--format", "gguf", "--out", str(out))
    assert run2.code == 2 and "gguf" in run2.err  # typer names the choices
    assert not out.exists()


# --- the strength search ---------------------------------------------------------------------------------------------


def test_a_searched_lora_version_stores_its_adapter_at_the_kept_strength(tmp_path: Path) -> None:
    """The search applies α × the trained change to the parent; the stored adapter has α folded into lora_B, so on
    the parent's weights it still generates what the merged version does."""
    from peft import PeftModel

    torch.set_num_threads(1)
    store = LocalStore(tmp_path / "store")
    cfg = SkillgraftConfig(
        store=str(store.root), recipe={"kind": "lora", "r": 4, "alpha": 8},
        train={"batch_size": 8, "progress": False},
        search={"mode": "on", "learning_rates": [3e-3], "steps": 40, "alphas": [0.5], "budget_s": None},
        gate={"max_drop": 0.05, "guard_max_drop": 1.0},
    )  # fmt: skip
    steps.ensure_model(store, cfg)
    intake = Intake(store)
    intake.register_task(demo.SPECS["first"])
    batch = intake.accept_examples("first", demo.generate("first", 160, seed=5), "first.jsonl")
    cand = steps.train_candidate(store, cfg, [batch])
    reg = Registry(store, cfg.model)
    m = reg.manifest(cand.candidate.version)
    assert m.search is not None and m.search.rungs[m.search.chosen].alpha == 0.5
    assert m.adapter is not None and m.adapter.strength == 0.5

    merged_dir, adapter_dir = tmp_path / "merged", tmp_path / "adapter"
    assert cli(store, "export", "v1", "--out", str(merged_dir)).code == 0
    assert cli(store, "export", "v1", "--format", "adapter", "--out", str(adapter_dir)).code == 0
    assert "the strength search kept α 0.5" in (adapter_dir / layout.EXPORT_CARD).read_text()
    parent = steps.load_base(reg)
    prompts = [ex.prompt for ex in intake.eval_set("first")] + [ex.prompt for ex in demo.generate("count", 20, 9)]
    before = greedy(parent.model, parent.tokenizer, prompts)
    merged = load_model(str(merged_dir)).model
    adapted = PeftModel.from_pretrained(parent.model, str(adapter_dir)).eval()
    assert greedy(adapted, parent.tokenizer, prompts) == greedy(merged, parent.tokenizer, prompts) != before
    # the adapter folded back in is the stored version's weights: parent + α × the trained change
    folded = adapted.merge_and_unload().state_dict()
    want = merged.state_dict()
    assert max((folded[k] - want[k]).abs().max().item() for k in want) < 1e-5
