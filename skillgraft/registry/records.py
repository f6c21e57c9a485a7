"""The registry's records (model.json, champion.json, history.jsonl lines, status rows) and shared constants."""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from skillgraft import layout
from skillgraft.refs import BaseRef, FileEntry, utcnow

MANIFEST = layout.MANIFEST
CLAIM = layout.CLAIM
RESERVED_FILES = frozenset({MANIFEST, CLAIM})
POINTER_ACTIONS = frozenset({"promote", "rollback", "repair"})
CHECK_ACTIONS = frozenset({"post-check-passed", "post-check-failed", "post-check-skipped"})
"""History actions recording the post-promotion check of the champion (see :meth:`Registry.unchecked_champion`)."""

VersionStatus = Literal["complete", "incomplete", "corrupt"]


class ModelInfo(BaseModel):
    """``models/<model>/model.json``."""

    name: str
    base: BaseRef
    created_at: str = Field(default_factory=utcnow)
    base_files: dict[str, FileEntry] | None = Field(
        default=None,
        description="sha256 + size of every base snapshot file (models/<model>/base/...) when the model was "
        "registered, so status and promotion can check the snapshot without loading it (None: no snapshot, or a "
        "model registered before this was recorded)",
    )


class ChampionPointer(BaseModel):
    """``models/<model>/champion.json``: which version serves, since when, why, and which champion it replaced."""

    version: str
    previous: str | None = None
    since: str
    reason: str
    actor: str
    action: Literal["promote", "rollback", "repair"] = Field(
        "promote", description="the move that set this pointer (so a missing history entry can be written later)"
    )
    forced: bool = False
    move_id: str | None = Field(
        None,
        description="the mover's id for this move (the retrain flow: candidate + the champion etag it was gated "
        "against), so a retried promotion recognises its own landed write instead of calling it a conflict",
    )


class HistoryEntry(BaseModel):
    """One line of ``history.jsonl``. ``from`` (``from_version`` in Python) is the champion before a pointer move.

    Rollback entries also carry ``previous`` (the new pointer's ``previous``); ``record()`` may add other fields.
    """

    model_config = ConfigDict(extra="allow")

    action: str
    version: str
    from_version: str | None = Field(default=None, alias="from")
    reason: str = ""
    actor: str
    at: str
    forced: bool = False
    previous: str | None = None

    def to_line(self) -> bytes:
        return (self.model_dump_json(by_alias=True, exclude_unset=True) + "\n").encode()


class VersionInfo(BaseModel):
    """One row of :meth:`Registry.versions`."""

    version: str
    status: VersionStatus
    files: list[str] = Field(default_factory=list, description="model files (from the manifest when there is one)")
    attachments: list[str] = Field(default_factory=list)
    parent: str | None = None
    recipe: str | None = Field(default=None, description="the manifest's recipe kind (sa_proj, lora...)")
    tasks: list[str] = Field(default_factory=list, description="tasks the version is expected to know")
    created_at: str | None = None
    champion: bool = False
    last_action: str | None = Field(default=None, description="the last history action naming this version")
    gated: bool = Field(
        default=True,
        description="False for a complete version that has no gate decision (decision.json) and that no history "
        "entry names: its run stopped between writing it and the gate. Its batches count as not trained on, so the "
        "next run trains on them again",
    )
    problems: list[str] = Field(
        default_factory=list,
        description="why the version is incomplete or corrupt; a version whose parent is not complete is corrupt "
        "too (it can't be loaded)",
    )


def default_actor() -> str:
    """``$SKILLGRAFT_ACTOR``, else ``user@hostname``."""
    if actor := os.environ.get("SKILLGRAFT_ACTOR"):
        return actor
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class _Unset:
    def __repr__(self) -> str:
        return "<read now>"


READ_NOW: Any = _Unset()
