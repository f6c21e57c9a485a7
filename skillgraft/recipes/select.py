"""Selection is a plan before it is an action: parameter names + recipe + model type → which names train.

:func:`select` is pure (no torch, no model): it works on the names of a loaded model, of a checkpoint's tensors, or
on plain strings in a test. The :class:`Selection` it returns is what the trainer applies and what the manifest records.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from skillgraft.recipes.architectures import ARCHITECTURES, Architecture, architecture_for
from skillgraft.recipes.errors import FusedProjection, LayerOutOfRange, NothingMatched
from skillgraft.recipes.full import Full
from skillgraft.recipes.lora import LoRA
from skillgraft.recipes.patterns import Patterns
from skillgraft.recipes.recipe import Recipe, parse_recipe

_SAMPLE = 16


class Selection(BaseModel):
    """The plan: which parameters of a model a recipe trains (for LoRA: which modules get adapters).

    ``trainable`` are parameter names; for LoRA they are the base weights of the adapted modules (the weights the
    merged adapters change), while the parameters that actually train are PEFT's ``lora_A``/``lora_B``.
    """

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    recipe: Recipe
    model_type: str | None
    trainable: tuple[str, ...]
    """Sorted parameter names the recipe trains (LoRA: the base weights of ``modules``)."""
    modules: tuple[str, ...]
    """Sorted module names matched: the trainable names without their last component (``.weight``, ``.bias``)."""
    layers: tuple[int, ...]
    """Sorted language-model decoder-layer indices touched (empty when the model type is not in the map)."""
    layer_count: int | None
    """Decoder layers the model has, per the architecture map; None when the model type is not in the map."""
    frozen_prefixes: tuple[str, ...]
    """Prefixes kept frozen whatever the recipe (vision tower, projector) that this model has, e.g. ``model.visual``."""
    parameters_seen: int
    """How many parameter names the plan was made from."""

    def summary(self) -> str:
        """One line for a log or a model card, e.g. ``sa_proj on llama: 8 of 21 parameters train, in 8 modules...``."""
        on = f"{_describe(self.recipe)} on {self.model_type or 'an unknown model type'}"
        if isinstance(self.recipe, LoRA):
            what = f"LoRA adapters on {len(self.modules)} modules, base weights frozen"
        else:
            what = f"{len(self.trainable)} of {self.parameters_seen} parameters train, in {len(self.modules)} modules"
        parts = [f"{on}: {what}"]
        if self.layers:
            of = f" (of {self.layer_count})" if self.layer_count is not None else ""
            parts.append(f"layers {_ranges(self.layers)}{of}")
        if self.frozen_prefixes:
            parts.append(f"always frozen: {', '.join(self.frozen_prefixes)}")
        return "; ".join(parts)


def select(parameter_names: Sequence[str], recipe: str | dict | Recipe, model_type: str | None) -> Selection:
    """Plan which of ``parameter_names`` the ``recipe`` trains on a model of ``model_type`` (``config.model_type``).

    Raises :class:`UnknownArchitecture` when an architecture-aware recipe meets a type not in the map,
    :class:`LayerOutOfRange` when ``layers`` names a layer the model lacks, :class:`FusedProjection` when asked for
    part of a fused module, and :class:`NothingMatched` when the plan is empty.
    """
    recipe = parse_recipe(recipe)
    names = list(dict.fromkeys(parameter_names))
    if isinstance(recipe, Patterns):
        return _select_patterns(names, recipe, model_type)

    arch = architecture_for(model_type)
    located = {name: loc for name in names if (loc := arch.layer_of(name)) is not None}
    all_layers = sorted({index for index, _ in located.values()})
    frozen = tuple(sorted({prefix for name in names if (prefix := arch.frozen_prefix(name)) is not None}))

    if isinstance(recipe, Full):
        keep_frozen = not recipe.include_vision
        trainable = [name for name in names if not (keep_frozen and arch.frozen_prefix(name) is not None)]
        layers = all_layers
        applied = frozen if keep_frozen else ()
    else:
        in_layer = _in_layer_modules(arch, recipe.roles(), recipe)
        if not all_layers:
            raise _nothing_matched(recipe, model_type, names, arch)
        _check_layers_exist(recipe, all_layers, model_type)
        wanted = set(recipe.layers) if recipe.layers is not None else set(all_layers)
        trainable = [
            name for name, (index, inner) in located.items() if index in wanted and _module_of(inner) in in_layer
        ]
        if isinstance(recipe, LoRA):
            trainable = [name for name in trainable if name.endswith(".weight")]
        layers = sorted({located[name][0] for name in trainable})
        applied = frozen

    if not trainable:
        raise _nothing_matched(recipe, model_type, names, arch)
    return Selection(
        recipe=recipe,
        model_type=model_type,
        trainable=tuple(sorted(trainable)),
        modules=tuple(sorted({_module_of(name) for name in trainable})),
        layers=tuple(layers),
        layer_count=len(all_layers),
        frozen_prefixes=applied,
        parameters_seen=len(names),
    )


def _select_patterns(names: list[str], recipe: Patterns, model_type: str | None) -> Selection:
    include = [re.compile(pattern) for pattern in recipe.include]
    exclude = [re.compile(pattern) for pattern in recipe.exclude]
    included = [name for name in names if any(regex.search(name) for regex in include)]
    trainable = [name for name in included if not any(regex.search(name) for regex in exclude)]
    arch = ARCHITECTURES.get(model_type)  # type: ignore[arg-type]
    if not trainable:
        raise _nothing_matched(recipe, model_type, names, arch, excluded=len(included))
    layers: list[int] = []
    layer_count = None
    if arch is not None:
        layer_count = len({loc[0] for name in names if (loc := arch.layer_of(name)) is not None})
        layers = sorted({loc[0] for name in trainable if (loc := arch.layer_of(name)) is not None})
    return Selection(
        recipe=recipe,
        model_type=model_type,
        trainable=tuple(sorted(trainable)),
        modules=tuple(sorted({_module_of(name) for name in trainable})),
        layers=tuple(layers),
        layer_count=layer_count,
        frozen_prefixes=(),
        parameters_seen=len(names),
    )


def _in_layer_modules(arch: Architecture, roles: Sequence[str], recipe: Recipe) -> set[str]:
    """The in-layer module names that carry ``roles``; refuses to split a fused module."""
    wanted = set(roles)
    modules = set()
    for module, carried in arch.roles_by_module().items():
        hit = wanted & set(carried)
        if not hit:
            continue
        if not set(carried) <= wanted:
            missing = [role for role in carried if role not in wanted]
            raise FusedProjection(
                f"{_describe(recipe)}: {arch.model_type} fuses {', '.join(carried)} in one module "
                f"{module!r}, so they can't be tuned separately; add {', '.join(missing)} to projections "
                f"(or use a patterns recipe that names {module!r} and accepts all of {', '.join(carried)})"
            )
        modules.add(module)
    return modules


def _check_layers_exist(recipe: Recipe, all_layers: list[int], model_type: str | None) -> None:
    chosen = getattr(recipe, "layers", None)
    if chosen is None:
        return
    missing = sorted(set(chosen) - set(all_layers))
    if missing:
        raise LayerOutOfRange(
            f"{_describe(recipe)}: layers {missing} are not in this {model_type} model, which has "
            f"{len(all_layers)} decoder layers ({_ranges(all_layers)}); pick indices from that range or null for all"
        )


def _nothing_matched(
    recipe: Recipe, model_type: str | None, names: list[str], arch: Architecture | None, excluded: int = 0
) -> NothingMatched:
    sample, where = _sample_modules(names, arch)
    shown = ", ".join(sample[:_SAMPLE]) + (f", ... ({len(sample) - _SAMPLE} more)" if len(sample) > _SAMPLE else "")
    because = f" ({excluded} matched include but all were excluded)" if excluded else ""
    return NothingMatched(
        f"{_describe(recipe)} matched none of the {len(names)} parameters of this "
        f"{model_type or 'unknown'} model{because}; {where}: {shown or '(the model has no parameters)'}"
    )


def _sample_modules(names: list[str], arch: Architecture | None) -> tuple[list[str], str]:
    """Module names of the model's first layer (per the map when it knows the type), to show what there is to match."""
    modules = list(dict.fromkeys(_module_of(name) for name in names))
    if arch is not None:
        first = [_module_of(name) for name in names if (loc := arch.layer_of(name)) is not None and loc[0] == 0]
        if first:
            return list(dict.fromkeys(first)), "its first decoder layer has modules"
    for module in modules:
        match = re.search(r"(?:^|\.)\d+\.", module)
        if match:
            prefix = module[: match.end()]
            return [m for m in modules if m.startswith(prefix)], f"modules under {prefix[:-1]!r}"
    return modules, "its modules are"


def _module_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _describe(recipe: Recipe) -> str:
    knobs = ", ".join(
        f"{key}={list(value) if isinstance(value, tuple) else value!r}"
        for key, value in recipe.model_dump().items()
        if key != "kind"
    )
    return f"recipe {recipe.kind}({knobs})"


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2, 5"``."""
    spans: list[list[int]] = []
    for index in sorted(indices):
        if spans and index == spans[-1][1] + 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
