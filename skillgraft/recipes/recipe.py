"""The closed set of recipes, discriminated on ``kind``: a config file picks a recipe by name, never by import path."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from skillgraft.recipes.full import Full
from skillgraft.recipes.lora import LoRA
from skillgraft.recipes.mlp_gate_up import MLPGateUp
from skillgraft.recipes.patterns import Patterns
from skillgraft.recipes.sa_proj import SAProj

Recipe = Annotated[SAProj | MLPGateUp | Full | LoRA | Patterns, Field(discriminator="kind")]
"""Which parameters train. Use it as a field type in a config model; YAML gives ``{kind: sa_proj, ...}``."""

_CLASSES = (SAProj, MLPGateUp, Full, LoRA, Patterns)
_BY_NAME: dict[str, type] = {cls.model_fields["kind"].default: cls for cls in _CLASSES}
RECIPE_NAMES: tuple[str, ...] = tuple(_BY_NAME)
"""The recipe names a config may use as ``kind`` (or alone, for the defaults)."""

_ADAPTER: TypeAdapter[Recipe] = TypeAdapter(Recipe)


def parse_recipe(value: str | dict[str, Any] | Recipe) -> Recipe:
    """A recipe from a bare name (``"sa_proj"``: its defaults), a mapping with ``kind`` (from YAML), or a recipe.

    Raises ValueError naming the known recipes for an unknown name, and pydantic's ValidationError (a ValueError)
    with the validator's fix for a bad knob.
    """
    if isinstance(value, _CLASSES):
        return value
    if isinstance(value, str):
        name = value.strip()
        if name == "patterns":
            raise ValueError(
                "the patterns recipe needs regexes: give {kind: patterns, include: ['<regex>', ...]} "
                "instead of the bare name"
            )
        if name not in _BY_NAME:
            raise ValueError(f"unknown recipe {value!r}: use one of {', '.join(RECIPE_NAMES)}")
        return _BY_NAME[name]()
    if isinstance(value, dict):
        kind = value.get("kind")
        if kind is None:
            raise ValueError(f"recipe {value!r} has no 'kind': set kind to one of {', '.join(RECIPE_NAMES)}")
        if kind not in _BY_NAME:
            raise ValueError(f"unknown recipe kind {kind!r}: use one of {', '.join(RECIPE_NAMES)}")
        return _ADAPTER.validate_python(value)
    raise TypeError(f"a recipe is a name, a mapping with 'kind', or a recipe model; got {type(value).__name__}")
