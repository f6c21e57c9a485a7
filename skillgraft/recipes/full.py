"""Full: train every parameter of the language model (embeddings, norms, head included).

The most learning and by far the most forgetting (Zhu et al., arXiv 2510.08564: +31.8 new, -23.3 held-out); kept as
the reference point a selective recipe is measured against.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Full(BaseModel):
    """Every language-model parameter; on a multimodal model the vision tower and projector stay frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: Literal["full"] = "full"
    include_vision: bool = False
    """Also train the vision tower and multimodal projector (every parameter of the model)."""
