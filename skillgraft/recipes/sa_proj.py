"""SA Proj: train the self-attention q/k/v/o projections of the language model — skillgraft's default recipe.

Zhu et al. ("How to Teach Large Multimodal Models New Skills", arXiv 2510.08564) found it learns new skills with the
least forgetting of held-out ones (+24.9 new, -0.6 held-out on their benchmarks), because the output-distribution drift
that looks like forgetting is driven mostly by the MLP, which this recipe leaves frozen.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from skillgraft.recipes.layers import Layers

PROJECTIONS: tuple[str, ...] = ("q", "k", "v", "o")


class SAProj(BaseModel):
    """Self-attention projections of every (or the chosen) decoder layer; vision tower and projector stay frozen.

    On models that fuse q, k and v in one module (GPT-2 ``attn.c_attn``, Phi-3 ``qkv_proj``) they train together:
    asking for only some of them is an error, not a silent widening.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: Literal["sa_proj"] = "sa_proj"
    projections: tuple[str, ...] = PROJECTIONS
    """Which projections train: any of q, k, v, o (o is the attention output projection)."""
    layers: Layers = None
    """Decoder layers (from 0) whose projections train; null: every layer."""

    @field_validator("projections")
    @classmethod
    def _known_projections(cls, projections: tuple[str, ...]) -> tuple[str, ...]:
        if not projections:
            raise ValueError("projections is empty: name at least one of q, k, v, o (default: all four)")
        unknown = [p for p in projections if p not in PROJECTIONS]
        if unknown:
            raise ValueError(
                f"unknown projections {unknown}: use letters among q, k, v, o (e.g. [q, v]); "
                f"for MLP projections use the mlp_gate_up recipe"
            )
        repeated = sorted({p for p in projections if projections.count(p) > 1})
        if repeated:
            raise ValueError(f"projections {repeated} are listed more than once: list each letter once")
        return projections

    def roles(self) -> tuple[str, ...]:
        """The architecture-map roles this recipe trains."""
        return self.projections
