"""Deltas: the full new values of the tensors a fine-tune changed, stored as safetensors, replayed onto a base.

A delta holds whole tensors, never arithmetic differences, so ``base + delta`` reproduces the tuned weights bit for
bit. A version chain is replayed in order (later deltas override earlier ones): see :func:`apply_deltas`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save
from torch import nn

__all__ = ["DeltaError", "apply_deltas", "delta_from_bytes", "delta_to_bytes", "extract_delta", "flatten_deltas"]


class DeltaError(ValueError):
    """A delta that does not fit its model (unknown tensor, shape or dtype mismatch) or is not a valid delta file."""


def extract_delta(
    base_state: Mapping[str, torch.Tensor], tuned_state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The tensors of ``tuned_state`` whose values differ bitwise from ``base_state``, as detached CPU copies.

    Both states must hold the same names with the same shapes and dtypes (a fine-tune changes values, not the
    architecture); anything else raises :class:`DeltaError` listing every mismatch. Tied weights (e.g. ``lm_head``
    tied to ``embed_tokens``) appear under each name that changed, as separate copies.
    """
    problems: list[str] = []
    if missing := sorted(set(base_state) - set(tuned_state)):
        problems.append(f"missing from the tuned model: {_some(missing)}")
    if extra := sorted(set(tuned_state) - set(base_state)):
        problems.append(f"not in the base model: {_some(extra)}")
    delta: dict[str, torch.Tensor] = {}
    for name in sorted(set(base_state) & set(tuned_state)):
        base, tuned = base_state[name].detach(), tuned_state[name].detach()
        if base.shape != tuned.shape:
            problems.append(f"{name}: shape {tuple(base.shape)} in the base, {tuple(tuned.shape)} tuned")
        elif base.dtype != tuned.dtype:
            problems.append(f"{name}: dtype {base.dtype} in the base, {tuned.dtype} tuned")
        elif not _bitwise_equal(base, tuned):
            delta[name] = tuned.to("cpu", copy=True).contiguous()
    if problems:
        raise DeltaError(
            "cannot extract a delta: the tuned model does not have the base's tensors ("
            + "; ".join(problems)
            + "). Train a copy of the same base model, in the same dtype."
        )
    return delta


def delta_to_bytes(delta: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise a delta as one safetensors blob, with ``metadata`` (string keys and values) in its header.

    Tensors sharing storage (tied weights) and non-contiguous or non-CPU tensors are copied first: safetensors
    stores each tensor once, contiguously.
    """
    metadata = dict(metadata or {})
    if bad := sorted(k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)):
        raise DeltaError(f"delta metadata must map strings to strings; not so for {bad}: json-encode those values")
    tensors: dict[str, torch.Tensor] = {}
    seen_storage: set[tuple[str, int]] = set()
    for name in sorted(delta):
        tensor = delta[name].detach().to("cpu").contiguous()
        key = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if key in seen_storage and tensor.numel() > 0:
            tensor = tensor.clone()
        seen_storage.add(key)
        tensors[name] = tensor
    return _safetensors_save(tensors, metadata=metadata)


def delta_from_bytes(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a blob written by :func:`delta_to_bytes`: ``(tensors, metadata)``. Never unpickles anything."""
    try:
        tensors = _safetensors_load(bytes(data))
    except SafetensorError as err:
        raise DeltaError(f"not a valid safetensors delta ({len(data)} bytes): {err}") from err
    return tensors, _read_metadata(data)


def flatten_deltas(deltas: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One delta equivalent to applying ``deltas`` in order: for each name, the value of the last delta holding it."""
    flat: dict[str, torch.Tensor] = {}
    for delta in deltas:
        flat.update(delta)
    return flat


def apply_deltas(model: nn.Module, deltas: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Replay a chain of deltas (oldest first) onto ``model``, in place, keeping each parameter's dtype and device.

    Every name and shape is checked before anything is written, so a delta that does not fit raises
    :class:`DeltaError` (naming the tensors) and leaves the model untouched. Values are copied into the existing
    tensors, so tied weights stay tied and optimiser references stay valid. A delta tensor of another dtype is
    cast to the model's (bit-exact only when the dtypes match, as they do for deltas extracted from this base).
    """
    flat = flatten_deltas(deltas)
    state = model.state_dict(keep_vars=True)
    problems = [f"{name}: not a tensor of this model" for name in sorted(set(flat) - set(state))]
    problems += [
        f"{name}: shape {tuple(flat[name].shape)} in the delta, {tuple(state[name].shape)} in the model"
        for name in sorted(set(flat) & set(state))
        if flat[name].shape != state[name].shape
    ]
    if problems:
        raise DeltaError(
            f"cannot apply {len(deltas)} delta(s) to this {type(model).__name__}: {_some(problems, sep='; ')}. "
            "Was the delta made from another base model? The model was left unchanged."
        )
    with torch.no_grad():
        for name, value in flat.items():
            state[name].copy_(value)


def _read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8-byte little-endian length, then that much JSON)."""
    (header_len,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8 : 8 + header_len]))
    return dict(header.get("__metadata__") or {})


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same bytes (unlike ``torch.equal``, a NaN equals itself and -0.0 differs from 0.0)."""
    as_bytes = lambda t: t.to("cpu").contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    return torch.equal(as_bytes(a), as_bytes(b))


def _some(items: Sequence[str], sep: str = ", ", limit: int = 10) -> str:
    """Up to ``limit`` items joined by ``sep``, then a count, to keep an error readable."""
    shown = sep.join(items[:limit])
    return shown if len(items) <= limit else f"{shown}; and {len(items) - limit} more"
