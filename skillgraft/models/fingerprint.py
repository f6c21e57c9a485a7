"""A content hash of a model's weights, so a delta is never applied to the wrong base."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn


def state_dict_sha256(model: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """The sha256 (hex) of every tensor of ``model.state_dict()``: its name, dtype, shape and raw bytes, by name.

    The state dict holds the parameters and the persistent buffers, i.e. what a checkpoint stores; non-persistent
    buffers (rotary ``inv_freq``...) are recomputed from the config and left out. Tied weights appear under each of
    their names. The hash depends on the values only, not on device, layout or ``requires_grad``: tensors are
    hashed as contiguous CPU bytes (any dtype, bf16 and fp8 included, is read as its raw bytes).
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        header = f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{tuple(tensor.shape)}\0{tensor.numel()}\n"
        digest.update(header.encode("utf-8"))
        digest.update(_raw_bytes(tensor))
    return digest.hexdigest()


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's values as bytes in row-major order (a byte view, so bf16 / fp8 need no numpy dtype)."""
    flat = tensor.to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())
