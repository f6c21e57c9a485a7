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
