"""MLP Gate&Up: train the MLP gate and up projections of the language model, down projection frozen.

Zhu et al. (arXiv 2510.08564) report the most new-skill learning of the partial recipes (+30.5) at a larger
held-out cost (-2.1) than SA Proj; keeping the down projection frozen is what limits the output drift.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from skillgraft.recipes.layers import Layers


class MLPGateUp(BaseModel):
    """MLP gate and up projections of every (or the chosen) decoder layer; down projection frozen.

    Models without a gated MLP train the up projection only: GPT-2 has no gate, its up projection is ``mlp.c_fc``
    (and ``mlp.c_proj``, the down projection, stays frozen); BERT's up projection is ``intermediate.dense``. Models
    that fuse gate and up in one module (Phi-3 ``gate_up_proj``) train that module.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: Literal["mlp_gate_up"] = "mlp_gate_up"
    layers: Layers = None
    """Decoder layers (from 0) whose gate and up projections train; null: every layer."""

    def roles(self) -> tuple[str, ...]:
        """The architecture-map roles this recipe trains."""
        return ("gate", "up")
