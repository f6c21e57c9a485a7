"""A LoRA fine-tune's PEFT adapter, captured before :func:`~skillgraft.recipes.finish` merges it into the weights.

The adapter is kept as the two files PEFT itself writes and reads (``adapter_config.json`` and
``adapter_model.safetensors``: safetensors only, never a pickle), so a version can store them beside its merged delta
and an export can hand them to ``PeftModel.from_pretrained`` unchanged.

:func:`finish` has one return value (the merged model), so the adapter it captured is held for that model here, in a
weak map, until :func:`take_adapter` collects it: whoever stores the version takes it once, right after the fine-tune.
torch and peft are imported inside the functions, so ``import skillgraft.recipes`` stays light.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skillgraft import layout

if TYPE_CHECKING:
    import torch

_CAPTURED: weakref.WeakKeyDictionary[Any, LoraAdapter] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LoraAdapter:
    """A PEFT LoRA adapter as its two files: ``config`` (adapter_config.json, parsed) and ``weights`` (the bytes of
    adapter_model.safetensors)."""

    config: dict[str, Any]
    weights: bytes

    def files(self, *, applies_to: str, revision: str | None = None) -> dict[str, bytes]:
        """``{file name: bytes}`` to store or export. ``applies_to`` is written as the config's
        ``base_model_name_or_path`` (the weights the adapter was trained on: a hub id, a path, or a version), and
        ``revision`` as its ``revision``. The JSON is written with sorted keys and a sorted module list, so the same
        adapter always gives the same bytes."""
        config = dict(self.config)
        config["base_model_name_or_path"] = applies_to
        config["revision"] = revision
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        return {layout.ADAPTER_CONFIG: text.encode(), layout.ADAPTER_WEIGHTS: self.weights}

    def scaled(self, strength: float) -> LoraAdapter:
        """The adapter whose update is ``strength`` times this one's (every ``lora_B`` scaled): what the strength
        search keeps when it applies ``strength`` × the trained change to the parent's weights."""
        if strength == 1.0:
            return self
        from safetensors.torch import load as load_bytes
        from safetensors.torch import save as save_bytes

        tensors = load_bytes(self.weights)
        scaled = {k: (v * strength).contiguous() if ".lora_B." in k else v for k, v in tensors.items()}
        return LoraAdapter(config=self.config, weights=save_bytes(scaled, metadata={"format": "pt"}))


def capture(model: torch.nn.Module) -> LoraAdapter:
    """The adapter of a ``PeftModel`` as PEFT's ``save_pretrained`` writes it (safetensors)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="skillgraft-adapter-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        root = Path(tmp)
        config = json.loads((root / layout.ADAPTER_CONFIG).read_text(encoding="utf-8"))
        return LoraAdapter(config=config, weights=(root / layout.ADAPTER_WEIGHTS).read_bytes())


def hold_adapter(model: torch.nn.Module, adapter: LoraAdapter | None) -> None:
    """Keep ``adapter`` as the one ``model`` was merged from (None forgets any held one)."""
    if adapter is None:
        _CAPTURED.pop(model, None)
    else:
        _CAPTURED[model] = adapter


def take_adapter(model: torch.nn.Module) -> LoraAdapter | None:
    """The adapter :func:`finish` merged into ``model``, handed out once (None: ``model`` was not merged from one
    since it was last taken — another recipe, or a fine-tune run in other processes)."""
    return _CAPTURED.pop(model, None)
