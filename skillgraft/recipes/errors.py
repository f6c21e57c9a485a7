"""What can go wrong when planning or applying a recipe; every message says what to change."""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe that cannot be planned or applied on this model."""


class UnknownArchitecture(RecipeError):
    """The model type is not in the architecture map; a ``patterns`` recipe works on any model."""


class NothingMatched(RecipeError):
    """The recipe selected no parameter of this model."""


class LayerOutOfRange(RecipeError):
    """The recipe's ``layers`` names a decoder layer the model does not have."""


class FusedProjection(RecipeError):
    """The recipe asks for part of a fused module (e.g. q without k and v on GPT-2's ``attn.c_attn``)."""
