"""The model registry: versions, the champion pointer, promote / reject / rollback, and the history log.

Built only on the :class:`~skillgraft.store.ObjectStore` primitives, so it behaves the same on a local directory and on
S3. The keys of a model (``models/<model>/``: model.json, base/, versions/<v>/..., champion.json, history.jsonl)
are built by :mod:`skillgraft.layout`. :class:`Registry` is the one entry point; behind it:

* :mod:`~skillgraft.registry.versions` — :class:`VersionStore`: registration, the base snapshot, versions (claim,
  files, manifest last), verification, attachments;
* :mod:`~skillgraft.registry.champion` — :class:`ChampionLog`: the pointer and the history together (the rules
  below couple them), promote / reject / record / rollback / repair;
* :mod:`~skillgraft.registry.records` (the typed records) and :mod:`~skillgraft.registry.errors`.

Rules:

* A version exists for loading and promotion only once its manifest is written, and only while every model file
  still matches the manifest's sha256 and size. Nothing under ``versions/`` is ever overwritten.
* Version ids are allocated by ``put_new`` of ``claim.json``: two writers never get the same id, whatever files they
  write. A writer that dies leaves an ``incomplete`` version (claim and maybe some files, no manifest), never a
  half-valid one.
* ``champion.json`` moves only with ``replace_if`` on the etag the caller read: if someone else moved it first,
  :class:`PromotionConflict` (carrying the current champion) is raised and nothing is written.
* The pointer moves first, then the history entry is appended: a crash in between leaves the pointer right and the
  log one entry short, never a log entry for a move that did not happen. The pointer carries what the entry needs
  (action, reason, actor, since, forced), so the next promote / rollback appends the missing entry first (marked
  ``"recovered": true``) and :meth:`Registry.unlogged_move` lets ``status`` report the gap meanwhile.
* Promotion and rollback check the whole chain (the version and every parent back to the base) against the
  manifests: a version that builds on an incomplete or corrupt parent can't be loaded, so it never becomes champion.
* **Rollback rule.** Rollback returns to a *former champion*: by default the current pointer's ``previous``. The new
  pointer's ``previous`` is the ``previous`` that version had the last time it became champion (from history), so
  repeated rollbacks walk back down the chain (v3 → v2 → v1 → error) and never bounce between two versions. Making a
  version that never was champion the champion is a promotion, not a rollback.
* A version whose last decision in history is ``reject`` is promoted only with ``force=True`` (recorded as
  ``"forced": true``). A version that was champion only through forced promotions is a rollback target only with
  ``force=True`` too (the rollback is recorded as forced).
* A promotion passes ``move_id`` (the flow: candidate + gated-against etag): a retry that finds the pointer already
  carrying its ``move_id`` finishes the history entry and reports success instead of a conflict with itself.
* **Missing pointer.** ``champion.json`` absent while the history records pointer moves is damage, not "no champion":
  promote, rollback and :meth:`Registry.require_intact_pointer` (called before training) raise
  :class:`ChampionMissing`; :meth:`Registry.repair` rebuilds the pointer from the history (a ``repair`` entry).
* **Post-promotion checks are logged** (``post-check-passed`` / ``-failed`` / ``-skipped``):
  :meth:`Registry.unchecked_champion` names a promoted champion whose check never ran (a crash in between).
"""

from __future__ import annotations

from typing import Any

from skillgraft.names import check_name
from skillgraft.refs import BaseRef, Manifest, VersionRef
from skillgraft.registry.champion import ChampionLog
from skillgraft.registry.errors import (
    AttachmentExists,
    BaseMismatch,
    ChampionMissing,
    FileNotInVersion,
    ModelNotFound,
    NoChampion,
    NoPreviousChampion,
    PromotionConflict,
    PromotionRefused,
    RegistryError,
    VersionCorrupt,
    VersionNotFound,
    VersionNotValid,
)
from skillgraft.registry.records import (
    CHECK_ACTIONS,
    CLAIM,
    MANIFEST,
    POINTER_ACTIONS,
    READ_NOW,
    RESERVED_FILES,
    ChampionPointer,
    HistoryEntry,
    ModelInfo,
    VersionInfo,
    VersionStatus,
    default_actor,
)
from skillgraft.registry.versions import VersionStore
from skillgraft.store.base import ObjectStore


class Registry:
    """Versions and the champion of one model in a store. Cheap to construct; holds no cache.

    A facade: the versions are a :class:`VersionStore` (``version_store``), the pointer and the history a
    :class:`ChampionLog` (``champion_log``); each method below says which does the work.
    """

    def __init__(self, store: ObjectStore, model: str, *, actor: str | None = None) -> None:
        self.store = store
        self.model = check_name("model", model)
        self.actor = actor or default_actor()
        self.version_store = VersionStore(store, self.model, actor=self.actor)
        self.champion_log = ChampionLog(store, self.model, actor=self.actor, versions=self.version_store)

    # --- model and base (VersionStore) --------------------------------------------------------------------------------

    def init(self, base: BaseRef) -> ModelInfo:
        """:meth:`VersionStore.init`: register the model with its base (idempotent for the same base)."""
        return self.version_store.init(base)

    def info(self) -> ModelInfo | None:
        return self.version_store.info()

    def put_base_file(self, name: str, data: bytes) -> None:
        """:meth:`VersionStore.put_base_file`: write-once."""
        self.version_store.put_base_file(name, data)

    def get_base_file(self, name: str) -> bytes:
        return self.version_store.get_base_file(name)

    def has_base_snapshot(self) -> bool:
        return self.version_store.has_base_snapshot()

    def base_problems(self, *, verify: bool = True, info: ModelInfo | None = None) -> list[str]:
        """:meth:`VersionStore.base_problems`: what is wrong with the base snapshot (empty: nothing)."""
        return self.version_store.base_problems(verify=verify, info=info)

    # --- versions (VersionStore) --------------------------------------------------------------------------------------

    def create_version(self, files: dict[str, bytes], manifest: Manifest, *, actor: str | None = None) -> VersionRef:
        """:meth:`VersionStore.create_version`: claim the next id, write every file, then the manifest last."""
        return self.version_store.create_version(files, manifest, actor=actor)

    def versions(self, *, verify: bool = False) -> list[VersionInfo]:
        """Every version, in id order, with its status. ``corrupt`` here means an unreadable manifest or a missing
        file; with ``verify=True`` every file's sha256 and size are checked too (reads every file)."""
        return self.version_store.rows(verify=verify, current=self.champion, history=self.history)

    def manifest(self, version: str) -> Manifest:
        """:meth:`VersionStore.manifest`."""
        return self.version_store.manifest(version)

    def verify(self, version: str) -> list[str]:
        """:meth:`VersionStore.verify`: every problem with the version; empty when it is complete and valid."""
        return self.version_store.verify(version)

    def read_file(self, version: str, name: str) -> bytes:
        """:meth:`VersionStore.read_file`: a model file's bytes, checked against the manifest."""
        return self.version_store.read_file(version, name)

    def attach(self, version: str, name: str, data: bytes) -> None:
        """:meth:`VersionStore.attach`: a write-once report (metrics.json, decision.json, card.md)."""
        self.version_store.attach(version, name, data)

    def read_attachment(self, version: str, name: str) -> bytes:
        return self.version_store.read_attachment(version, name)

    # --- champion and history (ChampionLog) ---------------------------------------------------------------------------

    def champion(self) -> ChampionPointer | None:
        return self.champion_log.champion()

    def champion_with_etag(self) -> tuple[ChampionPointer | None, str | None]:
        """:meth:`ChampionLog.champion_with_etag`: the pointer and the etag to pass to promote / rollback."""
        return self.champion_log.champion_with_etag()

    def require_champion(self) -> ChampionPointer:
        """:meth:`ChampionLog.require_champion`."""
        return self.champion_log.require_champion()

    def lost_champion(self, history: list[HistoryEntry] | None = None) -> HistoryEntry | None:
        """:meth:`ChampionLog.lost_champion`: the last pointer move when ``champion.json`` is missing."""
        return self.champion_log.lost_champion(history)

    def require_intact_pointer(self, history: list[HistoryEntry] | None = None) -> None:
        """:meth:`ChampionLog.require_intact_pointer`: :class:`ChampionMissing` when the pointer is lost."""
        self.champion_log.require_intact_pointer(history)

    def promote(
        self,
        version: str,
        *,
        reason: str,
        actor: str | None = None,
        expected_etag: str | None = READ_NOW,
        force: bool = False,
        move_id: str | None = None,
    ) -> ChampionPointer:
        """:meth:`ChampionLog.promote`: make ``version`` the champion (conditional on ``expected_etag``)."""
        return self.champion_log.promote(
            version, reason=reason, actor=actor, expected_etag=expected_etag, force=force, move_id=move_id
        )

    def reject(self, version: str, *, reason: str, actor: str | None = None) -> HistoryEntry:
        """:meth:`ChampionLog.reject`: record that ``version`` was not promoted."""
        return self.champion_log.reject(version, reason=reason, actor=actor)

    def record(self, action: str, version: str, reason: str, actor: str | None = None, **extra: Any) -> HistoryEntry:
        """:meth:`ChampionLog.record`: a history entry that moves nothing."""
        return self.champion_log.record(action, version, reason, actor, **extra)

    def rollback(
        self,
        to: str | None = None,
        *,
        reason: str,
        actor: str | None = None,
        expected_etag: str | None = READ_NOW,
        force: bool = False,
    ) -> ChampionPointer:
        """:meth:`ChampionLog.rollback`: back to a former champion (by default the pointer's ``previous``)."""
        return self.champion_log.rollback(to, reason=reason, actor=actor, expected_etag=expected_etag, force=force)

    def repair(self, to: str | None = None, *, reason: str, actor: str | None = None) -> ChampionPointer:
        """:meth:`ChampionLog.repair`: rebuild a missing ``champion.json`` from the history."""
        return self.champion_log.repair(to, reason=reason, actor=actor)

    def unchecked_champion(
        self, current: ChampionPointer | None = READ_NOW, history: list[HistoryEntry] | None = None
    ) -> ChampionPointer | None:
        """:meth:`ChampionLog.unchecked_champion`: a promoted champion whose post-promotion check never ran."""
        return self.champion_log.unchecked_champion(current, history)

    def history(self) -> list[HistoryEntry]:
        return self.champion_log.history()

    def unlogged_move(
        self, current: ChampionPointer | None = READ_NOW, history: list[HistoryEntry] | None = None
    ) -> HistoryEntry | None:
        """:meth:`ChampionLog.unlogged_move`: the history entry the current pointer lacks, rebuilt from it."""
        return self.champion_log.unlogged_move(current, history)


__all__ = [
    "CHECK_ACTIONS",
    "CLAIM",
    "MANIFEST",
    "POINTER_ACTIONS",
    "READ_NOW",
    "RESERVED_FILES",
    "AttachmentExists",
    "BaseMismatch",
    "ChampionLog",
    "ChampionMissing",
    "ChampionPointer",
    "FileNotInVersion",
    "HistoryEntry",
    "ModelInfo",
    "ModelNotFound",
    "NoChampion",
    "NoPreviousChampion",
    "PromotionConflict",
    "PromotionRefused",
    "Registry",
    "RegistryError",
    "VersionCorrupt",
    "VersionInfo",
    "VersionNotFound",
    "VersionNotValid",
    "VersionStatus",
    "VersionStore",
    "default_actor",
]
