"""Models: load a base (hub id, local directory, GGUF file), fingerprint its weights, and store versions as deltas.

A version never stores a whole model: :func:`extract_delta` keeps the full new values of only the tensors training
changed, :func:`delta_to_bytes` writes them as safetensors, and :func:`apply_deltas` replays a chain of them onto a
freshly loaded base, bit-exactly. Nothing here unpickles: weights come from safetensors (or GGUF) only.
"""

from skillgraft.models.delta import (
    DeltaError,
    apply_deltas,
    delta_from_bytes,
    delta_to_bytes,
    extract_delta,
    flatten_deltas,
)
from skillgraft.models.fingerprint import state_dict_sha256
from skillgraft.models.load import LoadedModel, ModelSourceError, PickleWeightsRefused, load_model
from skillgraft.models.snapshot import load_snapshot, save_pretrained_dir, snapshot_files

__all__ = [
    "DeltaError",
    "LoadedModel",
    "ModelSourceError",
    "PickleWeightsRefused",
    "apply_deltas",
    "delta_from_bytes",
    "delta_to_bytes",
    "extract_delta",
    "flatten_deltas",
    "load_model",
    "load_snapshot",
    "save_pretrained_dir",
    "snapshot_files",
    "state_dict_sha256",
]
