"""Config: the documented example equals the defaults; bad files and overrides fail with the place named."""

from pathlib import Path

import pytest

from skillgraft.config import ConfigError, SkillgraftConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_documents_exactly_the_defaults():
    assert load_config(ROOT / "skillgraft.example.yaml").model_dump() == SkillgraftConfig().model_dump()


def test_env_overrides_file_and_arguments_override_env(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("store: /from/file\nmodel: filemodel\n")
    monkeypatch.setenv("SKILLGRAFT_STORE", "/from/env")
    cfg = load_config(path)
    assert cfg.store == "/from/env" and cfg.model == "filemodel"
    assert load_config(path, store="/from/arg").store == "/from/arg"


def test_recipe_given_by_name_gets_its_defaults():
    cfg = load_config(None, recipe="lora")
    assert cfg.recipe.kind == "lora" and cfg.recipe.r == 8


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train: {steps: 0}\n", "train.steps"),
        ("recipe: {kind: nope}\n", "recipe"),
        ("model: ../escape\n", "model"),
        ("gate: {max_drop: -1}\n", "gate.max_drop"),
        ("- a list\n", "mapping"),
        ("train: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_file_and_field(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trian: {steps: 3}\n", "trian: unknown key 'trian' in the top level; did you mean 'train'?"),
        ("gate: {max_dorp: 0.2}\n", "gate.max_dorp: unknown key 'max_dorp' in gate; did you mean 'gate.max_drop'?"),
        ("train: {stpes: 3}\n", "did you mean 'train.steps'?"),
        ("bootstrap_train: {learning_rat: 0.1}\n", "did you mean 'bootstrap_train.learning_rate'?"),
        ("suite: {smoke_example: 3}\n", "did you mean 'suite.smoke_examples'?"),
        ("recipe: {kind: sa_proj, layer: [0]}\n", "did you mean 'recipe.sa_proj.layers'?"),
        ("train: {drift_watch: {budget: 1, evry: 5}}\n", "did you mean 'train.drift_watch.every'?"),
        ("zzzzzz: 1\n", "unknown key 'zzzzzz' in the top level; known keys: base, bootstrap_recipe"),
    ],
)
def test_unknown_keys_are_refused_with_the_nearest_valid_name(tmp_path, text, message):
    """A typo must never turn a setting into its default: `gate: {max_dorp: 0.2}` would otherwise gate at 0.05."""
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_a_partial_train_block_keeps_the_documented_defaults(tmp_path):
    """`train: {steps: 200}` changes the steps only: lr and batch stay what skillgraft.example.yaml documents, not
    TrainConfig's class defaults (lr 1e-3)."""
    documented = load_config(ROOT / "skillgraft.example.yaml")
    path = tmp_path / "partial.yaml"
    path.write_text("train: {steps: 200}\nbootstrap_train: {steps: 10}\n")
    cfg = load_config(path)
    assert cfg.train.steps == 200 and cfg.bootstrap_train.steps == 10
    assert cfg.train.model_dump(exclude={"steps"}) == documented.train.model_dump(exclude={"steps"})
    assert cfg.bootstrap_train.model_dump(exclude={"steps"}) == documented.bootstrap_train.model_dump(exclude={"steps"})
    assert (cfg.train.learning_rate, cfg.train.batch_size) == (5e-4, 16)
    assert (cfg.bootstrap_train.learning_rate, cfg.bootstrap_train.schedule) == (3e-3, "cosine")
    path.write_text("train: {learning_rate: 0.00002, steps: 40}\n")
    cfg = load_config(path)
    assert (cfg.train.learning_rate, cfg.train.steps, cfg.train.batch_size) == (2e-5, 40, 16)


def test_base_set_anywhere_is_known_as_asked_for(tmp_path):
    """The registry refuses a run that asks for another base than the registered one; it must tell "asked for" from
    "the default"."""
    assert "base" not in load_config(None).model_fields_set
    assert "base" in load_config(None, base="/some/dir").model_fields_set
    path = tmp_path / "c.yaml"
    path.write_text("base: org/name\n")
    assert "base" in load_config(path).model_fields_set
