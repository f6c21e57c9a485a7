"""Whole-model directories: export for serving, and snapshots kept as bytes (a small base model in an object store)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from transformers import PreTrainedModel

from skillgraft.models.load import LoadedModel, ModelSourceError, load_model

__all__ = ["load_snapshot", "save_pretrained_dir", "snapshot_files"]


def save_pretrained_dir(model: PreTrainedModel, tokenizer: Any, path: str | Path) -> Path:
    """Write a full Hugging Face model directory (config, ``model.safetensors``, tokenizer files) at ``path``.

    ``path`` must not exist or be an empty directory: an export never overwrites files. Tied weights are stored
    once (transformers' own handling); the directory loads back with :func:`~skillgraft.models.load_model`.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists and is not an empty directory: export into a new directory")
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def snapshot_files(model: PreTrainedModel, tokenizer: Any) -> dict[str, bytes]:
    """The files of :func:`save_pretrained_dir`'s directory, as ``{relative posix path: bytes}``."""
    with tempfile.TemporaryDirectory(prefix="skillgraft-snapshot-") as tmp:
        root = save_pretrained_dir(model, tokenizer, Path(tmp) / "model")
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def load_snapshot(
    files: Mapping[str, bytes], *, source: str = "snapshot", trust_remote_code: bool = False
) -> LoadedModel:
    """Load a model from :func:`snapshot_files`' output (written to a temporary directory, loaded, then removed).

    File names must be relative paths inside the snapshot (no absolute paths, no ``..``): they may come from a
    store. ``source`` is recorded on the returned :class:`LoadedModel`.
    """
    with tempfile.TemporaryDirectory(prefix="skillgraft-snapshot-") as tmp:
        root = Path(tmp)
        for name, data in files.items():
            target = root / _safe_relative(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        loaded = load_model(str(root), trust_remote_code=trust_remote_code)
        # transformers keeps model.safetensors memory-mapped (private, copy-on-write); on POSIX a mapped file stays
        # readable after the directory is removed, so the model outlives it (test_snapshot_files_load_back_...).
        loaded.source = source
        return loaded


def _safe_relative(name: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside the snapshot directory, or :class:`ModelSourceError`."""
    path = PurePosixPath(name)
    if not name or "\\" in name or "\0" in name or path.is_absolute() or any(p in ("", "..") for p in path.parts):
        raise ModelSourceError(f"snapshot file name {name!r} is not a relative path inside the snapshot; refused")
    return path
