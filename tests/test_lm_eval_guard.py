"""skillgraft.lm_eval_guard: an in-memory model scored on a local lm-eval task YAML, offline, with lm-eval's metrics."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / datasets / huggingface_hub read them
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json
import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval", reason='lm-eval not installed: pip install "skillgraft[lm-eval]"')

from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from skillgraft.evaluate import TaskScore  # noqa: E402
from skillgraft.lm_eval_guard import LmEvalError, describe_task, score  # noqa: E402

torch.set_num_threads(1)  # 2 shared cores: never oversubscribe beside other torch processes

TASK = "toy_animal_sounds"
ANIMALS = [
    ("cow", "moo"),
    ("dog", "woof"),
    ("cat", "meow"),
    ("duck", "quack"),
    ("sheep", "baa"),
    ("owl", "hoot"),
    ("lion", "roar"),
    ("pig", "oink"),
    ("horse", "neigh"),
    ("frog", "croak"),
    ("bee", "buzz"),
    ("snake", "hiss"),
]


def _docs() -> list[dict]:
    sounds = [s for _, s in ANIMALS]
    docs = []
    for i, (animal, sound) in enumerate(ANIMALS):
        wrong = [sounds[(i + k) % len(sounds)] for k in (3, 5, 7)]
        choices = wrong[:]
        label = i % 4
        choices.insert(label, sound)
        docs.append({"question": f"the {animal} says", "choices": choices, "label": label})
    return docs


def _write_task(root: Path, name: str = TASK) -> Path:
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in _docs()), encoding="utf-8")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / f"{name}.yaml").write_text(
        f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
""",
        encoding="utf-8",
    )
    return tasks


def _tokenizer() -> PreTrainedTokenizerFast:
    words = sorted({w for d in _docs() for w in d["question"].split() + d["choices"]})
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=64, special_tokens=["[UNK]", "[PAD]", "[BOS]", "[EOS]"])
    tok.train_from_iterator([" ".join(words)] * 3, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )


def _model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def _train_on_answers(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, steps: int = 300) -> None:
    """Plain SGD on "the <animal> says <sound>", loss on the sound only: the model learns the right choices."""
    ids = torch.tensor([tok(f"the {a} says {s}")["input_ids"] for a, s in ANIMALS])
    labels = ids.clone()
    labels[:, :-1] = -100
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    return _write_task(tmp_path_factory.mktemp("lm_eval_task"))


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = _tokenizer()
    assert tok.decode(tok("the cow says moo")["input_ids"]) == "the cow says moo"  # WordLevel round-trips
    return tok


@pytest.fixture(scope="module")
def trained(tokenizer) -> LlamaForCausalLM:
    model = _model()
    _train_on_answers(model, tokenizer)
    return model


def test_describe_task_gives_metric_docs_and_a_stable_config_hash(task_dir, tmp_path):
    info = describe_task(TASK, include_path=task_dir)
    assert info["task"] == TASK
    assert info["output_type"] == "multiple_choice"
    assert info["metric"] == "acc"
    assert info["docs"] == len(ANIMALS)
    assert len(info["config_sha256"]) == 64
    assert describe_task(TASK, include_path=task_dir / f"{TASK}.yaml") == info  # one YAML file works too

    moved = tmp_path / "moved"  # the same YAML elsewhere: where it lives is not part of the task's content
    moved.mkdir()
    yaml_file = moved / f"{TASK}.yaml"
    yaml_file.write_text((task_dir / f"{TASK}.yaml").read_text())
    assert describe_task(TASK, include_path=moved)["config_sha256"] == info["config_sha256"]
    yaml_file.write_text(yaml_file.read_text().replace('"{{question}}"', '"Q: {{question}} A:"'))
    assert describe_task(TASK, include_path=moved)["config_sha256"] != info["config_sha256"]


def test_score_uses_lm_eval_aggregate_and_per_doc_values(task_dir, tokenizer, trained):
    untrained = _model()
    mode_before = [m.training for m in untrained.modules()]
    base = score(untrained, tokenizer, TASK, include_path=task_dir, batch_size=4)
    assert isinstance(base, TaskScore)
    assert (base.task, base.metric, base.n) == (TASK, "acc", len(ANIMALS))
    assert set(base.correct) <= {0, 1} and len(base.correct) == base.n
    assert sum(base.correct) / base.n == pytest.approx(base.score, abs=1e-12)
    assert [m.training for m in untrained.modules()] == mode_before

    trained.train()  # lm-eval calls model.eval(): score() must put train mode back
    best = score(trained, tokenizer, TASK, include_path=task_dir)
    assert trained.training and all(m.training for m in trained.modules())
    trained.eval()
    assert sum(best.correct) / best.n == pytest.approx(best.score, abs=1e-12)
    assert best.score > base.score
    assert best.score >= 0.9, best

    assert 1 <= len(best.samples) <= 5
    prompt, prediction, target = best.samples[0]
    assert prompt == "the cow says" and target == "moo" and prediction == "moo"


def test_limit_scores_the_first_docs(task_dir, tokenizer, trained):
    full = score(trained, tokenizer, TASK, include_path=task_dir)
    limited = score(trained, tokenizer, TASK, include_path=task_dir, limit=5)
    assert limited.n == 5 == len(limited.correct)
    assert limited.correct == full.correct[:5]
    assert sum(limited.correct) / 5 == pytest.approx(limited.score, abs=1e-12)


def test_scoring_twice_is_identical_and_leaves_rng_and_tokenizer_alone(task_dir, tokenizer, trained):
    random.seed(7)
    torch.manual_seed(7)
    expected_py, expected_torch = random.random(), torch.rand(1)
    random.seed(7)
    torch.manual_seed(7)
    vocab = dict(tokenizer.get_vocab())
    first = score(trained, tokenizer, TASK, include_path=task_dir, limit=6)
    second = score(trained, tokenizer, TASK, include_path=task_dir, limit=6)
    assert first == second
    assert random.random() == expected_py and torch.equal(torch.rand(1), expected_torch)
    assert tokenizer.get_vocab() == vocab


def test_nothing_is_written_to_the_datasets_cache(task_dir, tokenizer, trained, monkeypatch, tmp_path):
    import datasets.config

    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    score(trained, tokenizer, TASK, include_path=task_dir, limit=2)
    describe_task(TASK, include_path=task_dir)
    assert not cache.exists() or not any(cache.iterdir())
    assert sorted(p.name for p in task_dir.iterdir()) == [f"{TASK}.yaml"]


def test_unknown_task_lists_near_names(task_dir):
    with pytest.raises(LmEvalError, match=r"unknown lm-eval task 'toy_animal_sound'.*near names.*toy_animal_sounds"):
        describe_task("toy_animal_sound", include_path=task_dir)
    with pytest.raises(LmEvalError, match=r"near names.*'hellaswag'"):
        describe_task("hellaswg")


def test_missing_include_path_and_broken_yaml_are_explained(tmp_path, task_dir):
    with pytest.raises(LmEvalError, match=r"include_path .*nowhere.* does not exist"):
        describe_task(TASK, include_path=tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "oops.yaml").write_text("task: [unclosed\n")
    with pytest.raises(LmEvalError, match=r"oops.yaml: while parsing .*oops.yaml\", line 1"):
        describe_task("oops", include_path=broken)


def test_data_file_missing_is_explained(tmp_path):
    tasks = _write_task(tmp_path)
    (tmp_path / "data.jsonl").unlink()
    with pytest.raises(LmEvalError, match=rf"{TASK}.*local data file .*missing.*data.jsonl"):
        describe_task(TASK, include_path=tasks)


def test_hub_task_offline_says_so():
    with pytest.raises(LmEvalError, match=r"not scoreable offline.*allenai/ai2_arc.*local task YAML"):
        describe_task("arc_easy")


def test_groups_and_perplexity_tasks_are_refused(tmp_path):
    with pytest.raises(LmEvalError, match=r"'mmlu' is an lm-eval group/tag .*mmlu_stem.*a guard scores one task"):
        describe_task("mmlu")
    data = tmp_path / "text.jsonl"
    data.write_text(json.dumps({"text": "the cow says moo"}) + "\n")
    (tmp_path / "ppl.yaml").write_text(
        f"task: toy_ppl\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
    )
    with pytest.raises(LmEvalError, match=r"output_type 'loglikelihood_rolling'"):
        describe_task("toy_ppl", include_path=tmp_path / "ppl.yaml")


def test_missing_lm_eval_is_an_lm_eval_error(monkeypatch, task_dir):
    import builtins

    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    with pytest.raises(LmEvalError, match=r"skillgraft\[lm-eval\]"):
        describe_task(TASK, include_path=task_dir)
