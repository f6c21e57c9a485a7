"""The one architecture map: model type → where the decoder layers are and what their projections are called.

Every recipe asks this map; nothing else in skillgraft keeps a table of projection names. Names are those of
transformers 5.x models as built in memory (checked against tiny models in ``tests/test_recipes.py``), e.g.

* Llama: ``model.layers.0.self_attn.q_proj.weight``
* GPT-2: ``transformer.h.0.attn.c_attn.weight`` (q, k and v fused in one ``Conv1D``)
* Qwen2-VL: ``model.language_model.layers.0.self_attn.q_proj.weight``; its vision tower
  ``model.visual.blocks.0.attn.qkv.weight`` and projector ``model.visual.merger.*`` are always frozen.

A model type not in the map is refused (:class:`UnknownArchitecture`), never guessed: pass a ``patterns`` recipe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from skillgraft.recipes.errors import UnknownArchitecture

ROLES: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
"""Every projection role the map knows: attention q/k/v/o, MLP gate/up/down."""


@dataclass(frozen=True)
class Architecture:
    """Where a model type keeps its language-model decoder layers, and what their projections are called.

    ``layer_pattern`` is a regex searched in a parameter name; group 1 captures the decoder-layer index and the match
    ends on the dot after it, so the rest of the name is the module *inside* the layer. ``projections`` maps a role
    (q, k, v, o, gate, up, down) to that in-layer module name, matched exactly (so BERT's ``output.dense`` never hits
    ``attention.output.dense``). A module listed under several roles is fused (GPT-2 ``attn.c_attn`` is q, k and v).
    ``frozen`` names path components whose parameters are never trained by an architecture-aware recipe (vision tower,
    multimodal projector) unless ``full`` is told ``include_vision``.
    """

    model_type: str
    layer_pattern: str
    projections: Mapping[str, str]
    frozen: tuple[str, ...] = ()
    _layer_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _frozen_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.projections) - set(ROLES)
        if unknown:
            raise ValueError(f"{self.model_type}: unknown projection roles {sorted(unknown)}; known: {ROLES}")
        object.__setattr__(self, "projections", MappingProxyType(dict(self.projections)))
        object.__setattr__(self, "_layer_re", re.compile(self.layer_pattern))
        frozen_re = None
        if self.frozen:
            alternatives = "|".join(re.escape(part) for part in self.frozen)
            frozen_re = re.compile(rf"^(.*?(?:^|\.)(?:{alternatives}))(?:\.|$)")
        object.__setattr__(self, "_frozen_re", frozen_re)

    @property
    def fused(self) -> dict[str, tuple[str, ...]]:
        """In-layer modules that carry several roles, e.g. ``{"attn.c_attn": ("q", "k", "v")}`` for GPT-2."""
        return {module: roles for module, roles in self.roles_by_module().items() if len(roles) > 1}

    def roles_by_module(self) -> dict[str, tuple[str, ...]]:
        """In-layer module name → the roles it carries, in :data:`ROLES` order."""
        by_module: dict[str, tuple[str, ...]] = {}
        for role in ROLES:
            if role in self.projections:
                module = self.projections[role]
                by_module[module] = (*by_module.get(module, ()), role)
        return by_module

    def layer_of(self, name: str) -> tuple[int, str] | None:
        """``(layer index, name inside the layer)`` when ``name`` lies in a language-model decoder layer, else None."""
        if self.frozen_prefix(name) is not None:
            return None
        match = self._layer_re.search(name)
        if match is None:
            return None
        return int(match.group(1)), name[match.end() :]

    def frozen_prefix(self, name: str) -> str | None:
        """The always-frozen prefix ``name`` lies under (e.g. ``model.visual``), or None."""
        if self._frozen_re is None:
            return None
        match = self._frozen_re.match(name)
        return match.group(1) if match else None


_LLAMA_LIKE = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
_TEXT_LAYERS = r"(?:^|\.)layers\.(\d+)\."
# Multimodal models in transformers 5.x keep the text decoder under ``model.language_model``; anchoring on it keeps
# the vision tower's own ``encoder.layers.N.self_attn.q_proj`` (CLIP, SigLIP) out even before ``frozen`` is checked.
_VLM_LAYERS = r"(?:^|\.)language_model\.layers\.(\d+)\."
_LLAVA_FROZEN = ("vision_tower", "multi_modal_projector", "image_newline")


def _map(*architectures: Architecture) -> Mapping[str, Architecture]:
    return MappingProxyType({arch.model_type: arch for arch in architectures})


ARCHITECTURES: Mapping[str, Architecture] = _map(
    *(
        Architecture(model_type, _TEXT_LAYERS, _LLAMA_LIKE)
        for model_type in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
    ),
    Architecture(
        "phi3",
        _TEXT_LAYERS,
        {
            "q": "self_attn.qkv_proj",
            "k": "self_attn.qkv_proj",
            "v": "self_attn.qkv_proj",
            "o": "self_attn.o_proj",
            "gate": "mlp.gate_up_proj",
            "up": "mlp.gate_up_proj",
            "down": "mlp.down_proj",
        },
    ),
    # GPT-2 has no gate: its MLP is c_fc (up) → GELU → c_proj (down).
    Architecture(
        "gpt2",
        r"(?:^|\.)h\.(\d+)\.",
        {
            "q": "attn.c_attn",
            "k": "attn.c_attn",
            "v": "attn.c_attn",
            "o": "attn.c_proj",
            "up": "mlp.c_fc",
            "down": "mlp.c_proj",
        },
    ),
    # BERT has no gate either: intermediate.dense (up) → GELU → output.dense (down).
    Architecture(
        "bert",
        r"(?:^|\.)encoder\.layer\.(\d+)\.",
        {
            "q": "attention.self.query",
            "k": "attention.self.key",
            "v": "attention.self.value",
            "o": "attention.output.dense",
            "up": "intermediate.dense",
            "down": "output.dense",
        },
    ),
    Architecture("gemma3", _VLM_LAYERS, _LLAMA_LIKE, frozen=("vision_tower", "multi_modal_projector")),
    Architecture("llava", _VLM_LAYERS, _LLAMA_LIKE, frozen=_LLAVA_FROZEN),
    Architecture("llava_next", _VLM_LAYERS, _LLAMA_LIKE, frozen=_LLAVA_FROZEN),
    Architecture("llava_onevision", _VLM_LAYERS, _LLAMA_LIKE, frozen=_LLAVA_FROZEN),
    Architecture("qwen2_vl", _VLM_LAYERS, _LLAMA_LIKE, frozen=("visual",)),
    Architecture("qwen2_5_vl", _VLM_LAYERS, _LLAMA_LIKE, frozen=("visual",)),
)

KNOWN_MODEL_TYPES: tuple[str, ...] = tuple(sorted(ARCHITECTURES))


def architecture_for(model_type: str | None) -> Architecture:
    """The :class:`Architecture` of ``model_type`` (a ``config.model_type``); raises :class:`UnknownArchitecture`."""
    try:
        return ARCHITECTURES[model_type]  # type: ignore[index]
    except KeyError:
        raise UnknownArchitecture(
            f"model type {model_type!r} is not in the architecture map (known: {', '.join(KNOWN_MODEL_TYPES)}); "
            f"pass a patterns recipe instead, e.g. {{kind: patterns, include: ['\\.self_attn\\.(q|k|v|o)_proj\\.']}} "
            f"with regexes matched against the model's parameter names"
        ) from None
