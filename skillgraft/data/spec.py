"""What a task is: its name, what an answer looks like, and the limits its data is validated against.

A task spec is written once into ``tasks/<task>/task.json`` and never changes (a different spec needs a new task
name), so every batch of a task is validated against, and split by, the same rules.

    # sentiment.yaml
    name: sentiment
    description: Is the review positive, negative or neutral?
    answer_type: label          # text | label | number
    labels: [positive, negative, neutral]
    eval_fraction: 0.2          # share of prompts held out for the regression suite (hash-based, stable)
    min_rows: 8                 # smaller batches are rejected
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skillgraft.names import check_name


class TaskSpecError(ValueError):
    """A task spec file that cannot be read or does not describe a valid task."""


class TaskSpec(BaseModel):
    """One task the model is taught: how its data is validated, split and scored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="task name; becomes the folder tasks/<name>/ (a-z, 0-9, '_', '.', '-')")
    description: str = ""
    role: Literal["task", "guard"] = Field(
        "task",
        description="task: data to teach (split into train and eval); guard: a held-out set a model must not get "
        "worse on — every row is eval, never trained on or replayed, and no training row of any task may repeat "
        "one of its prompts (see `skillgraft guard add`)",
    )
    answer_type: Literal["text", "label", "number"] = Field(
        "text", description="text: free text; label: one of `labels`; number: a decimal number such as 42 or -3.5"
    )
    labels: list[str] | None = Field(None, description="the allowed answers; required iff answer_type is 'label'")
    metric: Literal["exact_match", "first_word"] = Field(
        "exact_match",
        description="exact_match: the whole answer, whitespace-normalised; first_word: the answer's first word "
        "(punctuation stripped), for one-word answers from models that go on talking",
    )
    eval_fraction: float = Field(
        0.2,
        description="share of prompts held out for evaluation (by prompt hash, so the same prompt always "
        "lands on the same side); at least one example per batch is held out",
    )
    min_rows: int = Field(8, description="batches with fewer examples are rejected")
    max_prompt_chars: int = 2000
    max_answer_chars: int = 200
    max_new_tokens: int = Field(16, description="generation budget when the model answers a prompt of this task")
    allow_duplicates: bool = Field(False, description="allow the same prompt more than once in a batch")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_name("task", value)

    @field_validator("eval_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"eval_fraction must be between 0 and 1 (exclusive), got {value}: try 0.2")
        return value

    @field_validator("min_rows")
    @classmethod
    def _min_rows(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"min_rows must be at least 2 (one train and one eval example), got {value}")
        return value

    @field_validator("max_prompt_chars", "max_answer_chars", "max_new_tokens")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @model_validator(mode="after")
    def _labels_iff_label(self) -> TaskSpec:
        if self.answer_type == "label":
            if not self.labels:
                raise ValueError("answer_type 'label' needs a non-empty `labels` list, e.g. labels: [yes, no]")
            problems = []
            if dupes := sorted({x for x in self.labels if self.labels.count(x) > 1}):
                problems.append(f"labels repeat {dupes}")
            if blank := [x for x in self.labels if not x.strip()]:
                problems.append(f"labels contain empty strings {blank}")
            if long := [x for x in self.labels if len(x) > self.max_answer_chars]:
                problems.append(f"labels longer than max_answer_chars={self.max_answer_chars}: {long}")
            if problems:
                raise ValueError("; ".join(problems) + ": fix the labels list")
        elif self.labels is not None:
            raise ValueError(
                f"`labels` is only used with answer_type 'label' (this task is '{self.answer_type}'): "
                "remove labels, or set answer_type: label"
            )
        return self

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TaskSpec:
        """Load a spec from a YAML file; raises :class:`TaskSpecError` naming the file and every wrong field."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise TaskSpecError(f"{path}: cannot read task spec: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise TaskSpecError(f"{path}: task spec is not UTF-8 text; re-save it as UTF-8") from None
        except yaml.YAMLError as e:
            raise TaskSpecError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise TaskSpecError(
                f"{path}: a task spec is a YAML mapping (name: ..., answer_type: ...), got {type(raw).__name__}"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            lines = [f"{'.'.join(map(str, err['loc'])) or 'spec'}: {err['msg']}" for err in e.errors()]
            raise TaskSpecError(f"{path}: invalid task spec:\n  " + "\n  ".join(lines)) from None


class Example(BaseModel):
    """One training or evaluation example: a prompt and its expected answer (and optionally an image reference)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    answer: str
    image: str | None = None
