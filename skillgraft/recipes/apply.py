"""Acting on a model: freeze everything but the plan (or wrap it with LoRA adapters), and fold adapters back in.

torch, transformers and peft are imported inside the functions, so ``import skillgraft.recipes`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from skillgraft.recipes.adapter import capture, hold_adapter
from skillgraft.recipes.errors import RecipeError
from skillgraft.recipes.lora import LoRA
from skillgraft.recipes.recipe import Recipe, parse_recipe
from skillgraft.recipes.select import Selection, select

if TYPE_CHECKING:
    import torch


def apply_recipe(model: torch.nn.Module, recipe: str | dict[str, Any] | Recipe) -> tuple[torch.nn.Module, Selection]:
    """Make exactly the recipe's selection trainable; returns the model to train and the plan applied.

    Reads ``model.config.model_type`` (any model, even one without a config, works with a ``patterns`` recipe).
    Every other parameter gets ``requires_grad=False``. For :class:`LoRA` the model is wrapped in place with
    ``peft.get_peft_model`` on the explicit list of planned modules and the ``PeftModel`` is returned: only the
    adapters train. Raises what :func:`select` raises, and :class:`RecipeError` if PEFT adapted other modules.
    """
    recipe = parse_recipe(recipe)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    selection = select([name for name, _ in model.named_parameters()], recipe, model_type)
    chosen = set(selection.trainable) if not isinstance(recipe, LoRA) else set()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in chosen)
    if isinstance(recipe, LoRA):
        model = _wrap_lora(model, recipe, selection)
    return model, selection


def finish(model: torch.nn.Module, recipe: str | dict[str, Any] | Recipe) -> torch.nn.Module:
    """The trained model with base parameter names and shapes: for LoRA, adapters merged into the base weights and
    unloaded (the caller can diff tensors against the base); any other recipe returns ``model`` unchanged.

    For LoRA the adapter is captured first, as PEFT's own files, and held for the merged model:
    :func:`~skillgraft.recipes.adapter.take_adapter` on the returned model hands it out (once)."""
    recipe = parse_recipe(recipe)
    if not isinstance(recipe, LoRA):
        hold_adapter(model, None)  # whatever an earlier lora finish held for this model is not this result's
        return model
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise RecipeError(
            f"finish() with a lora recipe needs the PeftModel that apply_recipe returned, got {type(model).__name__}"
        )
    adapter = capture(model)
    merged = model.merge_and_unload()
    hold_adapter(merged, adapter)
    return merged


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter elements; tied weights count once."""
    trainable = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


def _wrap_lora(model: torch.nn.Module, recipe: LoRA, selection: Selection) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    # GPT-2's Conv1D stores weights transposed; tell PEFT up front rather than let it flip the flag with a warning.
    conv1d = [isinstance(model.get_submodule(module), Conv1D) for module in selection.modules]
    if any(conv1d) and not all(conv1d):
        raise RecipeError(
            f"lora on {selection.model_type}: the planned modules mix Conv1D and Linear layers, which one LoRA config "
            f"can't adapt; use a narrower target"
        )
    config = LoraConfig(
        target_modules=list(selection.modules),
        r=recipe.r,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.dropout,
        bias="none",
        fan_in_fan_out=all(conv1d),
    )
    wrapped = get_peft_model(model, config)
    adapted = set(wrapped.targeted_module_names)
    if adapted != set(selection.modules):
        raise RecipeError(
            f"PEFT adapted {sorted(adapted)} but the plan was {list(selection.modules)}; "
            f"nothing was trained — report this with the model type {selection.model_type!r}"
        )
    return wrapped
