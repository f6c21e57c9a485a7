"""LoRA: low-rank adapters (PEFT) on the modules another recipe names, merged back into full weights at the end."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from skillgraft.recipes.layers import Layers

_TARGET_ROLES: dict[str, tuple[str, ...]] = {
    "sa_proj": ("q", "k", "v", "o"),
    "mlp_gate_up": ("gate", "up"),
}


class LoRA(BaseModel):
    """PEFT LoRA adapters on the language-model modules ``target`` resolves to; the base weights stay frozen.

    The adapters are given to PEFT as an explicit list of full module names, so on a multimodal model the vision
    tower (which has modules of the same short names) is never wrapped. :func:`skillgraft.recipes.finish` merges the
    adapters into the base weights, so the result diffs against the base like any other recipe.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: Literal["lora"] = "lora"
    target: Literal["sa_proj", "mlp_gate_up"] = "sa_proj"
    """Which modules get adapters: the self-attention q/k/v/o projections or the MLP gate/up projections."""
    r: int = Field(8, ge=1)
    """Adapter rank: more capacity and memory as it grows; 8-16 is usual."""
    alpha: float = Field(16, gt=0)
    """LoRA scaling numerator (updates are scaled by alpha / r); usually 2 × r."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter input, in [0, 1)."""
    layers: Layers = None
    """Decoder layers (from 0) whose modules get adapters; null: every layer."""

    def roles(self) -> tuple[str, ...]:
        """The architecture-map roles whose modules get adapters."""
        return _TARGET_ROLES[self.target]
