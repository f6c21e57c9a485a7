"""One config file (skillgraft.yaml) with environment overrides; every knob has a default that runs on a laptop.

Environment: ``SKILLGRAFT_STORE`` (store URL), ``SKILLGRAFT_MODEL`` (model name), ``SKILLGRAFT_CONFIG`` (config path).
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skillgraft.names import check_name
from skillgraft.recipes import Full, Recipe, SAProj, parse_recipe
from skillgraft.schemas import GatePolicy, SearchConfig, TrainConfig

DEFAULT_STORE = ".skillgraft/store"

# The documented defaults of the two training blocks (skillgraft.example.yaml). A partial block in a config file
# (``train: {steps: 200}``) is merged over these, never over TrainConfig's own class defaults.
TRAIN_DEFAULTS: dict[str, Any] = {"steps": 600, "learning_rate": 5e-4, "batch_size": 16}
BOOTSTRAP_TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 1500,
    "learning_rate": 3e-3,
    "batch_size": 32,
    "schedule": "cosine",
}


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eval_batch_size: int = Field(64, ge=1)
    probe_prompts: int = Field(64, ge=0, description="old-task prompts per task for the number-token bias probe")
    max_eval_examples: int | None = Field(None, ge=1, description="cap per task (None: the whole eval split)")
    smoke_examples: int = Field(32, ge=1, description="per task, for the post-promotion check")
    smoke_tolerance: float = Field(0.1, ge=0, le=1, description="allowed drop of the smoke score vs the gate's score")


class SkillgraftConfig(BaseModel):
    """The whole configuration; see skillgraft.example.yaml for every knob with its trade-off.

    Unknown keys are refused (a typo never turns into a default). Which fields a file or an override set is kept in
    ``model_fields_set``: ``base`` given there is a request for that base, checked against the registered one.
    """

    model_config = ConfigDict(extra="forbid")

    store: str = DEFAULT_STORE
    model: str = "demo"
    base: str = Field("builtin:demo-llama", description="hub id, local directory, .gguf file or builtin:demo-llama")
    credentials_block: str | None = Field(
        None,
        description="Prefect block with S3 credentials, '<block-type>/<name>' (aws-credentials/prod, "
        "minio-credentials/lab); used by the flows instead of the AWS chain. None: the standard AWS chain",
    )
    gguf_file: str | None = None
    revision: str | None = Field(
        None, description="with a hub id: the branch, tag or commit to load (a commit pins it)"
    )
    snapshot_base: bool = Field(
        False,
        description="copy the base's weights into the store when the model is registered, so the store is "
        "self-contained (a worker elsewhere needs neither the directory nor the hub); built-in bases always are",
    )
    trust_remote_code: bool = False
    recipe: Recipe = Field(default_factory=SAProj)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS))
    search: SearchConfig = Field(default_factory=SearchConfig, description="the budgeted search (skillgraft.search)")
    replay: float = Field(0.75, ge=0, lt=1, description="share of each training mix drawn from old tasks' train splits")
    gate: GatePolicy = Field(default_factory=GatePolicy)
    suite: SuiteConfig = Field(default_factory=SuiteConfig)
    bootstrap_recipe: Recipe = Field(
        default_factory=Full, description="recipe that teaches a bare base its first tasks"
    )
    bootstrap_train: TrainConfig = Field(default_factory=lambda: TrainConfig(**BOOTSTRAP_TRAIN_DEFAULTS))

    @field_validator("recipe", "bootstrap_recipe", mode="before")
    @classmethod
    def _recipe_by_name(cls, v):
        return parse_recipe(v) if isinstance(v, str) else v

    @model_validator(mode="wrap")
    @classmethod
    def _remember_what_was_given(cls, data, handler):
        """``train.model_fields_set`` is what the user wrote (a partial block is completed from the documented
        defaults): a run that searches for its learning rate must know whether one was set."""
        given = {
            k: set(v)
            for k in ("train", "bootstrap_train")
            if isinstance(data, dict) and isinstance(v := data.get(k), dict)
        }
        cfg = handler(data)
        for k in ("train", "bootstrap_train"):
            block = getattr(cfg, k)
            if k in given or not (isinstance(data, dict) and isinstance(data.get(k), BaseModel)):
                object.__setattr__(block, "__pydantic_fields_set__", given.get(k, set()))
        return cfg

    @field_validator("train", "bootstrap_train", mode="before")
    @classmethod
    def _over_documented_defaults(cls, v, info):
        if isinstance(v, dict):
            defaults = TRAIN_DEFAULTS if info.field_name == "train" else BOOTSTRAP_TRAIN_DEFAULTS
            return {**defaults, **v}
        return v

    @field_validator("model")
    @classmethod
    def _model_name(cls, v: str) -> str:
        return check_name("model", v)


class ConfigError(ValueError):
    """The config file or an override is invalid; nothing was run."""


def load_config(path: str | os.PathLike[str] | None = None, **overrides) -> SkillgraftConfig:
    """Read ``path`` (or ``$SKILLGRAFT_CONFIG``, or ./skillgraft.yaml if present), then env, then ``overrides``."""
    data: dict = {}
    path = (
        path
        or os.environ.get("SKILLGRAFT_CONFIG")
        or ("skillgraft.yaml" if Path("skillgraft.yaml").is_file() else None)
    )
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    for key, env in (("store", "SKILLGRAFT_STORE"), ("model", "SKILLGRAFT_MODEL")):
        if os.environ.get(env):
            data[key] = os.environ[env]
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SkillgraftConfig.model_validate(data)
    except ValidationError as e:
        where = f"{path}: " if path else ""
        problems = "; ".join(_describe(err) for err in e.errors())
        raise ConfigError(f"{where}invalid config: {problems}") from None


def _describe(err: dict) -> str:
    loc = [str(part) for part in err["loc"]]
    if err["type"] != "extra_forbidden":
        return f"{'.'.join(loc)}: {err['msg']}"
    known = sorted(_fields_at(loc[:-1]))
    where = ".".join(loc[:-1]) or "the top level"
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5)
    hint = f"did you mean {'.'.join([*loc[:-1], close[0]])!r}?" if close else f"known keys: {', '.join(known)}"
    return f"{'.'.join(loc)}: unknown key {loc[-1]!r} in {where}; {hint}"


def _fields_at(loc: list[str]) -> set[str]:
    """The field names of the settings block at ``loc`` (a discriminated recipe's tag is one step of the path)."""
    cls: Any = SkillgraftConfig
    for part in loc:
        fields = getattr(cls, "model_fields", {})
        if part in fields:
            cls = _model_of(fields[part].annotation, None)
        else:  # a union member picked by its tag (the recipe kind)
            cls = _model_of(cls, part)
        if cls is None:
            return set()
    return set(getattr(cls, "model_fields", {}))


def _model_of(annotation: Any, tag: str | None) -> Any:
    """The pydantic model inside ``annotation`` (Optional, Annotated, a union picked by its ``kind`` tag)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return (
            annotation
            if tag is None or annotation.model_fields.get("kind", None) is None
            else (annotation if annotation.model_fields["kind"].default == tag else None)
        )
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_of(typing.get_args(annotation)[0], tag)
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        if tag is None and len(members) > 1:
            return annotation  # a tagged union: the next step of the path is its tag
        for member in members:
            found = _model_of(member, tag)
            if found is not None:
                return found
    return None
