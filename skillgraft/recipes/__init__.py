"""Recipes: which parameters of a model train — sa_proj (default), mlp_gate_up, full, lora, patterns.

Plan with :func:`select` (pure, on parameter names), act with :func:`apply_recipe`, and call :func:`finish` after
training (merges LoRA adapters, holding the adapter for :func:`take_adapter`; identity otherwise). Model types are
resolved through one architecture map (:mod:`skillgraft.recipes.architectures`).
"""

from skillgraft.recipes.adapter import LoraAdapter, take_adapter
from skillgraft.recipes.apply import apply_recipe, count_parameters, finish
from skillgraft.recipes.architectures import ARCHITECTURES, KNOWN_MODEL_TYPES, Architecture, architecture_for
from skillgraft.recipes.errors import (
    FusedProjection,
    LayerOutOfRange,
    NothingMatched,
    RecipeError,
    UnknownArchitecture,
)
from skillgraft.recipes.full import Full
from skillgraft.recipes.lora import LoRA
from skillgraft.recipes.mlp_gate_up import MLPGateUp
from skillgraft.recipes.patterns import Patterns
from skillgraft.recipes.recipe import RECIPE_NAMES, Recipe, parse_recipe
from skillgraft.recipes.sa_proj import SAProj
from skillgraft.recipes.select import Selection, select

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "FusedProjection",
    "Full",
    "KNOWN_MODEL_TYPES",
    "LayerOutOfRange",
    "LoRA",
    "LoraAdapter",
    "MLPGateUp",
    "NothingMatched",
    "Patterns",
    "RECIPE_NAMES",
    "Recipe",
    "RecipeError",
    "SAProj",
    "Selection",
    "UnknownArchitecture",
    "apply_recipe",
    "architecture_for",
    "count_parameters",
    "finish",
    "parse_recipe",
    "select",
    "take_adapter",
]
