"""Exporting a version for serving: its merged weights as a full Hugging Face model directory (the default), or, for
a lora version, its PEFT adapter.

Either directory carries ``README.md`` (the model card the Hugging Face hub reads: :mod:`skillgraft.hub_card`) and
``skillgraft.json`` (the version, its chain and base, the lineage, and the sha256 and size of every file written).
The directory appears whole or not at all: it is written beside ``out`` and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from skillgraft import layout
from skillgraft.hub_card import ExportFormat, render
from skillgraft.lineage import lineage
from skillgraft.refs import Manifest
from skillgraft.registry import ModelNotFound, Registry, RegistryError
from skillgraft.schemas.gate import Decision
from skillgraft.schemas.report import RegressionReport
from skillgraft.store import KeyNotFound, ObjectStore

FORMATS: tuple[str, ...] = get_args(ExportFormat)
"""``merged``: the full weights (base + delta chain); ``adapter``: a lora version's PEFT adapter."""


class NoAdapter(RegistryError):
    """``--format adapter`` for a version that stores no adapter (not trained with the lora recipe)."""


def export(store: ObjectStore, model: str, version: str | None, out: Path, *, format: ExportFormat = "merged") -> Path:
    """Write ``version`` (None: the champion) of ``model`` to the new directory ``out``; returns ``out``.

    ``merged``: config, ``model.safetensors`` and tokenizer files, built from the base and the version's delta chain.
    ``adapter``: the version's ``adapter_config.json`` and ``adapter_model.safetensors`` exactly as stored, which
    ``PeftModel.from_pretrained`` loads on the parent's weights (no model is loaded to write them). Every file read
    is checked against its manifest. Raises :class:`ModelNotFound`, :class:`NoChampion`, :class:`VersionNotValid`
    (missing, incomplete, corrupt), :class:`NoAdapter`, :class:`FileExistsError` when ``out`` exists and is not an
    empty directory, or ValueError for an unknown format — each before anything is written.
    """
    from skillgraft.steps import chain, load_version

    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    reg = Registry(store, model)
    if reg.info() is None:
        raise ModelNotFound(f"model {model!r} is not registered in {store.url}; nothing was exported")
    if version is None:
        version = reg.require_champion().version
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty directory: export into a new directory")
    versions = chain(reg, version)  # VersionNotFound / VersionNotValid before any heavy work
    manifest = reg.manifest(version)
    if format == "adapter":
        files = {name: reg.read_file(version, name) for name in _adapter_files(manifest)}  # checked on read
    else:
        loaded = load_version(reg, version)
    report, decision, notes = _gate_records(reg, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        if format == "adapter":
            for name, data in files.items():
                (tmp / name).write_bytes(data)
        else:
            from skillgraft.models import save_pretrained_dir

            save_pretrained_dir(loaded.model, loaded.tokenizer, tmp)
        line = lineage(manifest, versions, store.url)
        (tmp / layout.EXPORT_CARD).write_text(render(manifest, line, report, decision, format, notes), "utf-8")
        provenance = {
            "model": model, "version": version, "format": format, "chain": versions,
            "base": manifest.base.model_dump(mode="json"), "store": store.url,
            "adapter": manifest.adapter.model_dump(mode="json") if format == "adapter" else None,
            "lineage": line, "files": _file_entries(tmp),
        }  # fmt: skip
        (tmp / layout.EXPORT_PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n", "utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above); rename needs the name free
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _adapter_files(manifest: Manifest) -> list[str]:
    where = f"{manifest.model}@{manifest.version}"
    kind = manifest.recipe.get("kind")
    if manifest.adapter is not None:
        return list(manifest.adapter.files)
    if kind != "lora":
        raise NoAdapter(
            f"{where} was trained with the {kind} recipe, which makes no adapter (only lora versions store one): "
            f"export its merged weights with --format merged (the default); nothing was written"
        )
    raise NoAdapter(
        f"{where} was trained with lora but stores no adapter (it was made before versions stored their adapter, or "
        f"trained over several processes): export its merged weights with --format merged; nothing was written"
    )


def _gate_records(reg: Registry, version: str) -> tuple[RegressionReport | None, Decision | None, list[str]]:
    """The version's stored regression report and gate decision (None where absent), and a note for each that is
    present but unreadable (the card says so; the export still goes ahead)."""
    notes: list[str] = []

    def read(name: str, model):
        try:
            return model.model_validate_json(reg.read_attachment(version, name))
        except KeyNotFound:
            return None
        except (ValidationError, ValueError) as e:
            notes.append(f"{name} of {version} could not be read ({type(e).__name__}); it is left out of this card")
            return None

    return read(layout.METRICS, RegressionReport), read(layout.DECISION, Decision), notes


def _file_entries(root: Path) -> dict[str, dict[str, int | str]]:
    """sha256 and size of every file under ``root`` (relative posix paths), the provenance file itself excepted."""
    out: dict[str, dict[str, int | str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name != layout.EXPORT_PROVENANCE:
            data = path.read_bytes()
            out[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return out
