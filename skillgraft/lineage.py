"""Where a version came from, as plain data: the software that made it, and the lineage an export carries.

Light on purpose (no torch, no Prefect): versions are read from the installed packages' metadata, and a flow-run id
is whatever the Prefect layer passed down as a plain string.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from skillgraft.refs import Manifest

SOFTWARE = ("skillgraft", "torch", "transformers", "peft")
"""The packages whose versions a version records (and an export repeats)."""


def software_versions() -> dict[str, str]:
    """``{package: installed version}`` for :data:`SOFTWARE` ("not installed" where one is missing)."""
    out: dict[str, str] = {}
    for name in SOFTWARE:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def parent_name(manifest: Manifest) -> str:
    """The weights a version was trained from, as a user can find them: the base's source for a first version,
    else ``<model>@<parent version>`` (export it with ``skillgraft export <parent version>``)."""
    return manifest.base.source if manifest.parent is None else f"{manifest.model}@{manifest.parent}"


def lineage(manifest: Manifest, chain: list[str], store_url: str) -> dict[str, Any]:
    """The lineage of a version for an export's provenance and model card: its chain from the base, the base, the
    recipe and data, the flow run that trained it, and the software it was trained with and exported with."""
    return {
        "model": manifest.model,
        "version": manifest.version,
        "parent": manifest.parent,
        "chain": chain,
        "base": manifest.base.model_dump(mode="json"),
        "recipe": manifest.recipe,
        "batches": [f"{b.task}/{b.batch_id}" for b in manifest.batches],
        "tasks": list(manifest.tasks),
        "flow_run_id": manifest.flow_run_id,
        "created_at": manifest.created_at,
        "created_by": manifest.created_by,
        "trained_with": dict(manifest.software),
        "exported_with": software_versions(),
        "store": store_url,
    }
