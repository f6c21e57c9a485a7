"""Guard suites on a model that has something to lose: a tiny Llama pretrained in this module on three skills (first,
last, max letter of a sequence), saved as a Hugging Face directory and used as a pretrained base. Its abilities are
registered as guards through the real CLI; then it is taught a new skill with a harmful setting (a fixed, high
learning rate) and with the default run (the budgeted search), through `skillgraft run` on a real Prefect server.
No mocks: real training, real scoring, the real gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from skillgraft import demo
from skillgraft.data import Example, Intake, TaskSpec
from skillgraft.evaluate import RegressionReport
from skillgraft.gate import Decision
from skillgraft.guards import read_guards
from skillgraft.registry import Registry
from skillgraft.store import LocalStore

pytestmark = pytest.mark.slow

SKILLS = ("first", "last", "max")


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def skillgraft(*args: str) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    cmd = [str(Path(sys.executable).parent / "skillgraft"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)


def flat(run: subprocess.CompletedProcess) -> str:
    text = run.stdout + run.stderr
    assert "Traceback" not in text, text
    return " ".join(text.split())


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A base that knows first/last/max (≈ 0.8-0.9 exact match), from a full fine-tune of the demo architecture."""
    from skillgraft.models import save_pretrained_dir
    from skillgraft.recipes import Full
    from skillgraft.train import TrainConfig, fine_tune

    root = tmp_path_factory.mktemp("pretrained")
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)  # beside another worker: one core
    tokenizer = demo.build_tokenizer()
    examples = [ex for t in SKILLS for ex in demo.generate(t, 1200, seed=0)]
    cfg = TrainConfig(steps=700, learning_rate=3e-3, batch_size=32, schedule="cosine", progress=False)
    tuned = fine_tune(demo.build_model(tokenizer), tokenizer, examples, Full(), cfg)
    base = save_pretrained_dir(tuned.model, tokenizer, root / "base")
    seen = {ex.prompt for ex in examples}
    for t in SKILLS:  # held-out questions of each skill, none seen in pretraining
        held = [ex for ex in demo.generate(t, 400, seed=9) if ex.prompt not in seen][:80]
        demo.write_jsonl(root / f"guard-{t}.jsonl", held)
    return base


def new_skill(path: Path, n: int, seed: int) -> Path:
    """'second : a b c' → b: a skill the base does not have (it answers ≈ 0.2 by chance)."""
    import random

    rng, rows, seen = random.Random(seed), [], set()
    while len(rows) < n:
        s = [rng.choice(demo.LETTERS) for _ in range(rng.randint(3, 6))]
        prompt = "second : " + " ".join(s)
        if prompt not in seen:
            seen.add(prompt)
            rows.append(Example(prompt=prompt, answer=s[1]))
    return demo.write_jsonl(path, rows)


def config(tmp: Path, base: Path, name: str, **extra) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump({"store": str(tmp / "store"), "model": "tiny", "base": str(base), "replay": 0.0,
                                    "suite": {"max_eval_examples": 80, "probe_prompts": 32}, **extra}))  # fmt: skip
    return path


def add_guards(cfg: Path, base: Path) -> None:
    for t in SKILLS:
        run = skillgraft(
            "guard", "add", t, str(base.parent / f"guard-{t}.jsonl"), "--max-new-tokens", "4", "--config", str(cfg)
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"guard '{t}' added to model 'tiny': 80 held-out rows" in flat(run)


def lm_eval_task(root: Path) -> Path:
    """A local lm-evaluation-harness task over local data (offline): pick the last letter among the sequence's
    letters, scored by log-likelihood (multiple choice, metric acc)."""
    rows = []
    for ex in demo.generate("last", 60, seed=11):
        letters = ex.prompt.split()[2:]
        choices = sorted(set(letters))
        rows.append({"question": ex.prompt, "choices": choices, "label": choices.index(ex.answer)})
    data = root / "lastmc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = root / "lm-eval-tasks"
    tasks.mkdir()
    (tasks / "lastmc.yaml").write_text(yaml.safe_dump({
        "task": "lastmc", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}], "metadata": {"version": 1},
    }))  # fmt: skip
    return tasks


def artifacts_of(output: str) -> dict:
    import re

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", output).group(1)
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {a.key: a for a in found if a.key}


def test_guards_hold_a_pretrained_models_abilities(harness, tmp_path, pretrained):
    spec = tmp_path / "second.yaml"
    spec.write_text(yaml.safe_dump(TaskSpec(name="second", max_new_tokens=4).model_dump(mode="json")))
    default = config(tmp_path, pretrained, "default.yaml", train={"progress": False})

    # 1. no guard yet: the first run on a pretrained base says loudly that nothing protects it (and trains nothing
    #    here: its only data is quarantined, so the warning is tested without a training run)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "second : a b c"}\n' * 10)
    unguarded = skillgraft("run", "second", str(bad), "--spec", str(spec), "--config", str(default))
    text = flat(unguarded)
    assert (
        "WARNING:" in text and "NOTHING protects what the base already knew" in text and "skillgraft guard add" in text
    )

    add_guards(default, pretrained)
    mc = skillgraft("guard", "add", "lastmc", "--lm-eval", "lastmc", "--include", str(lm_eval_task(tmp_path)),
                    "--limit", "40", "--config", str(default))  # fmt: skip
    assert mc.returncode == 0 and "lm-eval task lastmc (multiple_choice, metric acc, 40 documents)" in flat(mc), flat(
        mc
    )
    listed = flat(skillgraft("guard", "list", "--config", str(default)))
    assert all(t in listed for t in (*SKILLS, "lastmc")) and "lm-eval" in listed

    # 2. a harmful setting the user chose (lr and steps set: no search, exactly those are used): rejected, naming the
    #    guards it broke and the drift
    harmful = config(
        tmp_path, pretrained, "harmful.yaml", train={"learning_rate": 3e-3, "steps": 300, "progress": False}
    )
    run = skillgraft(
        "run", "second", str(new_skill(tmp_path / "second-0.jsonl", 500, seed=0)), "--config", str(harmful)
    )
    text = flat(run)
    assert run.returncode == 3, text
    reg = Registry(LocalStore(tmp_path / "store"), "tiny")
    v1 = reg.manifest("v1")
    assert v1.search is None and (v1.training.learning_rate, v1.training.steps) == (3e-3, 300)
    decision = Decision.model_validate_json(reg.read_attachment("v1", "decision.json"))
    failed = [r for r in decision.reasons if r.startswith("FAIL")]
    assert any(r.startswith("FAIL guard '") for r in failed), decision.reasons
    assert any("KL" in r or "number-token mass" in r for r in failed), decision.reasons
    assert decision.policy.max_kl == 0.5 and decision.policy.max_bias_increase == 0.05  # on by default here
    report = RegressionReport.model_validate_json(reg.read_attachment("v1", "metrics.json"))
    guards = {r.task: r for r in report.rows if r.guard}
    assert set(guards) == {*SKILLS, "lastmc"} and all(r.base == r.champion for r in guards.values())  # parent: the base
    assert guards["lastmc"].metric == "acc" and guards["lastmc"].n == 40
    assert max(r.champion - r.candidate for r in guards.values()) > 0.02  # it really forgot

    # 3. the default run (no learning rate, no steps): the search, bounded and recorded, and the gate's guarantee
    run = skillgraft(
        "run", "second", str(new_skill(tmp_path / "second-1.jsonl", 500, seed=1)), "--config", str(default)
    )
    text = flat(run)
    assert run.returncode in (0, 3), text
    v2 = reg.manifest("v2")
    assert v2.search is not None and v2.search.learning_rates == [5e-5, 2e-5, 5e-6]
    assert len(v2.search.rungs) == 9 and v2.search.chosen is not None and v2.search.selection_rows > 50
    kept = v2.search.rungs[v2.search.chosen]
    assert v2.training.learning_rate == kept.learning_rate
    report = RegressionReport.model_validate_json(reg.read_attachment("v2", "metrics.json"))
    decision = Decision.model_validate_json(reg.read_attachment("v2", "decision.json"))
    worst = max(max(r.champion, r.base) - r.candidate for r in report.rows if r.guard)
    if decision.promote:
        assert worst <= decision.policy.guard_max_drop + 1e-9 and report.probe.kl <= decision.policy.max_kl
    else:
        assert any(r.startswith("FAIL") for r in decision.reasons)
    assert any("guard 'lastmc'" in r for r in decision.reasons)  # the lm-eval guard is gated like the others
    card = reg.read_attachment("v2", "card.md").decode()
    assert "## Search" in card and "| lr | α |" in card and "guard" in card
    found = artifacts_of(run.stdout + run.stderr)
    rows = {row["task"]: row for row in json.loads(found["tiny-regression"].data)}
    assert rows["lastmc"]["kind"] == "guard" and rows["first"]["kind"] == "guard"
    assert all(
        rows[t]["pass"] == (not any(f"FAIL guard '{t}'" in r for r in decision.reasons)) for t in rows if t != "second"
    )
    assert "data:image/png;base64," in found["tiny-search"].data and "**kept**" in found["tiny-search"].data
    # the guards were never trained on
    assert all(b.task == "second" for v in ("v1", "v2") for b in reg.manifest(v).batches)


def test_guard_prompts_are_off_limits_for_training_both_ways(tmp_path):
    store = LocalStore(tmp_path / "store")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"store": str(store.root), "model": "m"}))
    guard_rows = demo.generate("first", 20, seed=1)
    guard_file = demo.write_jsonl(tmp_path / "g.jsonl", guard_rows)
    assert skillgraft("guard", "add", "capitals", str(guard_file), "--config", str(cfg)).returncode == 0
    assert read_guards(store, "m").get("capitals").kind == "data"
    intake = Intake(store)
    assert intake.task_spec("capitals").role == "guard"
    assert [b.train_rows for b in intake.batches("capitals")] == [0]  # every row held out

    # a training file that repeats a guard prompt is quarantined, naming the guard
    intake.register_task(demo.SPECS["first"])
    leaking = demo.write_jsonl(tmp_path / "t.jsonl", demo.generate("first", 30, seed=2) + guard_rows[:1])
    checked = skillgraft("validate", "first", str(leaking), "--config", str(cfg))
    assert checked.returncode == 1 and "of guard 'capitals'" in flat(checked)

    # a guard that repeats a prompt some task trained on is refused too (and not added)
    trained = demo.generate("first", 30, seed=3)
    intake.accept_examples("first", trained, "first-3.jsonl")
    train_prompt = next(ex for b in intake.batches("first") for ex in intake.load_split(b, "train"))
    second = demo.write_jsonl(tmp_path / "g2.jsonl", demo.generate("first", 10, seed=4) + [train_prompt])
    refused = skillgraft("guard", "add", "more", str(second), "--config", str(cfg))
    assert refused.returncode == 1 and "was trained on" in flat(refused) and "not added" in flat(refused)
    assert read_guards(store, "m").get("more") is None

    # a guard is never a training batch
    from skillgraft.steps import untrained_batches

    assert {b.task for b in untrained_batches(store, "m")} == {"first"}

    removed = skillgraft("guard", "remove", "capitals", "--config", str(cfg))
    assert removed.returncode == 0 and read_guards(store, "m").guards == []
    missing = skillgraft("guard", "remove", "capitals", "--config", str(cfg))
    assert missing.returncode == 2 and "has no guard 'capitals'" in flat(missing)
    assert json.loads((store.root / "models/m/guards.json").read_text()) == {"guards": []}


def test_an_lm_eval_guard_whose_task_changed_is_refused(tmp_path):
    from skillgraft.config import load_config
    from skillgraft.guards import GuardError
    from skillgraft.steps import guard_tasks

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"store": str(tmp_path / "store"), "model": "m"}))
    tasks = lm_eval_task(tmp_path)
    added = skillgraft("guard", "add", "lastmc", "--lm-eval", "lastmc", "--include", str(tasks), "--config", str(cfg))
    assert added.returncode == 0, flat(added)
    loaded = load_config(cfg)
    assert [t.name for t in guard_tasks(LocalStore(tmp_path / "store"), loaded)] == ["lastmc"]
    yaml_file = tasks / "lastmc.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("'{{question}}'", "'Q: {{question}}'"))
    with pytest.raises(GuardError, match=r"lastmc changed since the guard was added.*guard remove lastmc"):
        guard_tasks(LocalStore(tmp_path / "store"), loaded)


def test_prompts_only_guard_feeds_the_drift_probes_and_is_never_scored(harness, tmp_path, pretrained):
    cfg = config(tmp_path, pretrained, "c.yaml", train={"learning_rate": 1e-3, "steps": 5, "progress": False})
    prompts = tmp_path / "probes.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": ex.prompt}) + "\n" for ex in demo.generate("max", 12, seed=21)))
    added = skillgraft("guard", "add", "probes", str(prompts), "--prompts-only", "--config", str(cfg))
    assert added.returncode == 0 and "12 prompts for the drift probes" in flat(added), flat(added)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    refused = skillgraft("guard", "add", "bad", str(bad), "--prompts-only", "--config", str(cfg))
    assert refused.returncode == 2 and "bad.jsonl:2: no 'prompt' string; nothing was added" in flat(refused)

    spec = tmp_path / "second.yaml"
    spec.write_text(yaml.safe_dump(TaskSpec(name="second", max_new_tokens=4).model_dump(mode="json")))
    run = skillgraft(
        "run", "second", str(new_skill(tmp_path / "s.jsonl", 60, seed=3)), "--spec", str(spec), "--config", str(cfg)
    )
    assert run.returncode in (0, 3), flat(run)
    reg = Registry(LocalStore(tmp_path / "store"), "tiny")
    report = RegressionReport.model_validate_json(reg.read_attachment("v1", "metrics.json"))
    assert [r.task for r in report.rows] == ["second"]  # nothing scored for it
    assert report.probe is not None and report.probe.prompts == 12 and report.probe.kl is not None
    decision = Decision.model_validate_json(reg.read_attachment("v1", "decision.json"))
    assert any("mean KL" in r for r in decision.reasons)  # the default drift limit on a pretrained base, on its prompts
