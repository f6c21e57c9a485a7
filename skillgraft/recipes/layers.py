"""The ``layers`` knob shared by the per-layer recipes: which decoder layers of the language model train."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def check_layers(layers: list[int] | None) -> list[int] | None:
    """Reject layer lists that can't mean what the user wants; the model's own layer count is checked at selection."""
    if layers is None:
        return None
    if not layers:
        raise ValueError("layers is empty: use null for every decoder layer, or list the indices to train, e.g. [0, 1]")
    negative = [index for index in layers if index < 0]
    if negative:
        raise ValueError(
            f"layers {negative} are negative: decoder layers count from 0 (the layer nearest the embeddings); "
            f"list non-negative indices, or null for every layer"
        )
    repeated = sorted({index for index in layers if layers.count(index) > 1})
    if repeated:
        raise ValueError(f"layers {repeated} are listed more than once: list each index once")
    return layers


Layers = Annotated[list[int] | None, AfterValidator(check_layers)]
"""Decoder-layer indices (from 0) of the language model; None: every layer."""
