"""Patterns: train the parameters whose names match the user's regexes — for architectures not in the map."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator


class Patterns(BaseModel):
    """Parameters whose name matches (``re.search``) any ``include`` regex and no ``exclude`` regex.

    No architecture knowledge is applied: what the regexes match trains, the vision tower included — add it to
    ``exclude`` on a multimodal model (e.g. ``'(^|\\.)(visual|vision_tower|multi_modal_projector)\\.'``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: Literal["patterns"] = "patterns"
    include: list[str]
    """Regexes searched in each parameter name (e.g. ``'\\.h\\.\\d+\\.attn\\.c_attn\\.'``); a match trains it."""
    exclude: list[str] = []
    """Regexes that keep a parameter frozen even when an include matches."""

    @field_validator("include")
    @classmethod
    def _some_include(cls, include: list[str]) -> list[str]:
        if not include:
            raise ValueError(
                "include is empty: give at least one regex searched in the parameter names, "
                "e.g. ['\\.self_attn\\.(q|k|v|o)_proj\\.']"
            )
        return include

    @field_validator("include", "exclude")
    @classmethod
    def _valid_regexes(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"[{index}] {pattern!r} is not a valid regex ({error}); escape literal dots as '\\.'"
                ) from None
        return patterns
