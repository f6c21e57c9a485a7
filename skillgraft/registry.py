"""The model registry: versions, the champion pointer, promote / reject / rollback, and the history log.

Built only on the :class:`~skillgraft.store.ObjectStore` primitives, so it behaves the same on a local directory and on
S3. The keys of a model (``models/<model>/``: model.json, base/, versions/<v>/..., champion.json, history.jsonl)
are built by :mod:`skillgraft.layout`.

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

import getpass
import hashlib
import json
import os
import random
import re
import socket
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skillgraft import layout
from skillgraft.names import check_name
from skillgraft.refs import BaseRef, FileEntry, Manifest, VersionRef, utcnow
from skillgraft.store.base import KeyExists, KeyNotFound, ObjectStore

MANIFEST = layout.MANIFEST
CLAIM = layout.CLAIM
RESERVED_FILES = frozenset({MANIFEST, CLAIM})
POINTER_ACTIONS = frozenset({"promote", "rollback", "repair"})
CHECK_ACTIONS = frozenset({"post-check-passed", "post-check-failed", "post-check-skipped"})
"""History actions recording the post-promotion check of the champion (see :meth:`Registry.unchecked_champion`)."""

_VERSION_ID = re.compile(r"^v([1-9][0-9]*)$")
_ACTION = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_HISTORY_ATTEMPTS = 50

VersionStatus = Literal["complete", "incomplete", "corrupt"]


# --- errors ---------------------------------------------------------------------------------------------------------


class RegistryError(Exception):
    """Base class: something about a model or version that the user can act on."""


class ModelNotFound(RegistryError):
    """The model has no ``model.json``: :meth:`Registry.init` was never called for it."""


class BaseMismatch(RegistryError):
    """A base model other than the one the model was registered with."""


class VersionNotValid(RegistryError):
    """The version can't be read or promoted: missing, incomplete (no manifest), or corrupt."""

    def __init__(self, message: str, *, version: str) -> None:
        super().__init__(message)
        self.version = version


class VersionNotFound(VersionNotValid):
    """No object at all under ``versions/<v>/``."""


class VersionCorrupt(VersionNotValid):
    """A model file does not match the manifest (sha256, size, or missing), or the manifest itself is unreadable."""

    def __init__(
        self,
        message: str,
        *,
        version: str,
        file: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
        problems: list[str] | None = None,
    ) -> None:
        super().__init__(message, version=version)
        self.file = file
        self.expected = expected
        self.actual = actual
        self.problems = problems or []


class FileNotInVersion(RegistryError, KeyError):
    """A file name that is not one of the version's model files."""

    def __str__(self) -> str:
        return str(self.args[0])


class AttachmentExists(RegistryError):
    """Attachments are write-once."""


class PromotionConflict(RegistryError):
    """The champion pointer moved between the read of its etag and the conditional write; nothing was written."""

    def __init__(self, message: str, *, current: ChampionPointer | None) -> None:
        super().__init__(message)
        self.current = current


class NoPreviousChampion(RegistryError):
    """A rollback with no former champion to go back to."""


class NoChampion(RegistryError):
    """The model has no champion yet (nothing was ever promoted)."""


class PromotionRefused(RegistryError):
    """The version's recorded decision forbids the promotion (it was rejected), or a rollback targets a version that
    was champion only through a forced promotion; ``force=True`` overrides."""


class ChampionMissing(RegistryError):
    """``champion.json`` is gone but the history records champions: a damaged store. Nothing may train, promote or
    roll back until :meth:`Registry.repair` rebuilds the pointer (``skillgraft repair``)."""

    def __init__(self, message: str, *, last: HistoryEntry) -> None:
        super().__init__(message)
        self.last = last


# --- typed records --------------------------------------------------------------------------------------------------


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


def _check_file_name(name: str) -> str:
    """A model file / attachment / base file name: '/'-separated segments of A-Z a-z 0-9 _ . - (no '..')."""
    if not layout.is_file_name(name):
        raise RegistryError(
            f"invalid file name {name!r}: use '/'-separated parts of letters, digits, '_', '.', '-' (starting with a "
            f"letter or digit, no '..'); nothing was written"
        )
    return name


def _logged_as_recovered(log: bytes, entry: HistoryEntry) -> bool:
    """Does ``log`` hold a recovered entry for the same pointer move (action, version, time) as ``entry``?"""
    for raw in log.splitlines():
        if b'"recovered":true' not in raw:
            continue
        try:
            other = json.loads(raw)
        except ValueError:
            continue
        if (other.get("action"), other.get("version"), other.get("at")) == (entry.action, entry.version, entry.at):
            return True
    return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Unset:
    def __repr__(self) -> str:
        return "<read now>"


READ_NOW: Any = _Unset()


class Registry:
    """Versions and the champion of one model in a store. Cheap to construct; holds no cache."""

    def __init__(self, store: ObjectStore, model: str, *, actor: str | None = None) -> None:
        self.store = store
        self.model = check_name("model", model)
        self.actor = actor or default_actor()

    # --- keys -------------------------------------------------------------------------------------------------------

    def _vkey(self, version: str, name: str = "") -> str:
        return layout.version_file_key(self.model, version, name)

    @property
    def _info_key(self) -> str:
        return layout.model_info_key(self.model)

    @property
    def _base_prefix(self) -> str:
        return layout.base_prefix(self.model)

    @property
    def _champion_key(self) -> str:
        return layout.champion_key(self.model)

    @property
    def _history_key(self) -> str:
        return layout.history_key(self.model)

    def _where(self, version: str | None = None) -> str:
        return f"{self.model}@{version}" if version else f"model {self.model!r}"

    # --- model ------------------------------------------------------------------------------------------------------

    def init(self, base: BaseRef) -> ModelInfo:
        """Register the model with its base. Idempotent for the same base (same ``sha256``, the weights' identity);
        raises :class:`BaseMismatch` for a different one."""
        base_prefix = self._base_prefix
        files = {key[len(base_prefix) :]: self.store.get(key) for key in self.store.keys(base_prefix)}
        recorded = {n: FileEntry(sha256=_sha256(d), size=len(d)) for n, d in files.items()} if files else None
        info = ModelInfo(name=self.model, base=base, base_files=recorded)
        try:
            self.store.put_new(self._info_key, info.model_dump_json(indent=2).encode())
            return info
        except KeyExists:
            existing = self.info()
            if existing is None:  # put_new said it exists, then it was gone: someone deletes under models/
                raise RegistryError(
                    f"{self._info_key} vanished while registering {self.model!r} in {self.store.url}: "
                    f"something deletes registry objects; nothing was written"
                ) from None
            if existing.base.sha256 != base.sha256:
                raise BaseMismatch(
                    f"model {self.model!r} is registered with base {existing.base.source!r} "
                    f"(sha256 {existing.base.sha256[:12]}…), not {base.source!r} (sha256 {base.sha256[:12]}…): "
                    f"a delta must never meet another base; register a new model name instead. Nothing was changed"
                ) from None
            return existing

    def info(self) -> ModelInfo | None:
        try:
            return ModelInfo.model_validate_json(self.store.get(self._info_key))
        except KeyNotFound:
            return None

    def _require_info(self) -> ModelInfo:
        info = self.info()
        if info is None:
            raise ModelNotFound(
                f"model {self.model!r} is not registered in {self.store.url} (no {self._info_key}): "
                f"call Registry.init(base) first; nothing was written"
            )
        return info

    def put_base_file(self, name: str, data: bytes) -> None:
        """Write-once; writing the same bytes again is a no-op, different bytes raise."""
        key = layout.base_file_key(self.model, _check_file_name(name))
        try:
            self.store.put_new(key, data)
        except KeyExists:
            if self.store.get(key) != data:
                raise RegistryError(
                    f"base file {name!r} of model {self.model!r} already exists with other content ({key}): base "
                    f"snapshots are write-once; nothing was changed"
                ) from None

    def get_base_file(self, name: str) -> bytes:
        return self.store.get(layout.base_file_key(self.model, _check_file_name(name)))

    def has_base_snapshot(self) -> bool:
        return next(iter(self.store.keys(self._base_prefix)), None) is not None

    def base_problems(self, *, verify: bool = True, info: ModelInfo | None = None) -> list[str]:
        """What is wrong with the base snapshot (files under ``models/<model>/base/``) against the list recorded at
        registration: a missing, added, resized or (``verify``) changed file. Empty when the base is not a
        snapshot or nothing was recorded (older stores: only loading the base checks it, against its hash)."""
        info = info or self._require_info()
        if not info.base.snapshot or info.base_files is None:
            return []
        prefix = self._base_prefix
        present = {key[len(prefix) :] for key in self.store.keys(prefix)}
        problems = [f"base file {n}: missing ({prefix}{n})" for n in sorted(set(info.base_files) - present)]
        problems += [f"base file {n}: not in the snapshot recorded at registration ({prefix}{n})"
                     for n in sorted(present - set(info.base_files))]  # fmt: skip
        for name, entry in sorted(info.base_files.items()):
            if name not in present:
                continue
            if not verify:
                continue
            try:
                data = self.store.get(prefix + name)
            except KeyNotFound:
                problems.append(f"base file {name}: missing ({prefix}{name})")
                continue
            if len(data) != entry.size:
                problems.append(f"base file {name}: size {len(data)} bytes, registered as {entry.size}")
            if (actual := _sha256(data)) != entry.sha256:
                problems.append(f"base file {name}: sha256 {actual}, registered as {entry.sha256}")
        return problems

    # --- versions ---------------------------------------------------------------------------------------------------

    def _listing(self) -> dict[int, set[str]]:
        """Version number → names present under its folder (one listing)."""
        prefix = layout.versions_prefix(self.model)
        found: dict[int, set[str]] = {}
        for key in self.store.keys(prefix):
            version, _, name = key[len(prefix) :].partition("/")
            if m := _VERSION_ID.fullmatch(version):
                found.setdefault(int(m.group(1)), set()).add(name)
        return found

    def create_version(self, files: dict[str, bytes], manifest: Manifest, *, actor: str | None = None) -> VersionRef:
        """Store a new version: claim the next id, write every file (write-once), then the manifest LAST.

        The registry sets ``manifest.model``, ``manifest.version`` and ``manifest.files`` (sha256 + size of each file),
        and ``created_by`` when empty. Raises before writing anything when a name is invalid or reserved, when the
        manifest lists a file that is not given, when the base differs from the model's, or when the parent is unknown.
        """
        actor = actor or self.actor
        if not files:
            raise RegistryError(f"a version of {self.model!r} needs at least one model file; nothing was written")
        for name in files:
            _check_file_name(name)
            if name in RESERVED_FILES:
                raise RegistryError(f"{name!r} is reserved for the registry; rename the file. Nothing was written")
        if unknown := sorted(set(manifest.files) - set(files)):
            raise RegistryError(f"the manifest lists files that were not given: {unknown}; nothing was written")
        info = self._require_info()
        if manifest.base.sha256 != info.base.sha256:
            raise BaseMismatch(
                f"the manifest's base (sha256 {manifest.base.sha256[:12]}…) is not model {self.model!r}'s base "
                f"(sha256 {info.base.sha256[:12]}…); nothing was written"
            )
        parent = manifest.parent
        if parent is not None and not self.store.exists(self._vkey(check_name("version", parent), MANIFEST)):
            raise VersionNotFound(
                f"parent {self._where(parent)} has no manifest (missing or incomplete); nothing was written",
                version=parent,
            )

        version = self._claim(actor)
        for name, data in files.items():
            if not self._put_new_or_same(self._vkey(version, name), data):
                raise RegistryError(
                    f"{self._vkey(version, name)} appeared while writing {self._where(version)} (claimed by this "
                    f"writer): another process ignored the claim; {version} stays incomplete, not promotable"
                )
        final = manifest.model_copy(
            update={
                "model": self.model,
                "version": version,
                "files": {n: FileEntry(sha256=_sha256(d), size=len(d)) for n, d in files.items()},
                "created_by": manifest.created_by or actor,
            }
        )
        if not self._put_new_or_same(self._vkey(version, MANIFEST), final.model_dump_json(indent=2).encode()):
            raise RegistryError(
                f"{self._vkey(version, MANIFEST)} was written by another process while this one wrote "
                f"{self._where(version)}; check it with verify('{version}')"
            )
        return VersionRef(model=self.model, version=version)

    def _put_new_or_same(self, key: str, data: bytes) -> bool:
        """put_new; True also when the object already holds exactly ``data`` (a retried request whose first try
        landed but whose response was lost reads as 'exists')."""
        try:
            self.store.put_new(key, data)
        except KeyExists:
            return self.store.get(key) == data
        return True

    def _claim(self, actor: str) -> str:
        number = max(self._listing(), default=0) + 1
        nonce = uuid.uuid4().hex  # makes this writer's claim bytes unique, so "same bytes" means "mine"
        for _ in range(1000):
            version = f"v{number}"
            claim = {"model": self.model, "version": version, "actor": actor, "at": utcnow(), "nonce": nonce}
            if self._put_new_or_same(self._vkey(version, CLAIM), json.dumps(claim).encode()):
                return version
            number += 1  # a concurrent writer took it: the next one
        raise RegistryError(f"could not allocate a version id for {self.model!r} after 1000 tries; nothing was written")

    def versions(self, *, verify: bool = False) -> list[VersionInfo]:
        """Every version, in id order, with its status. ``corrupt`` here means an unreadable manifest or a missing
        file; with ``verify=True`` every file's sha256 and size are checked too (reads every file)."""
        listing = self._listing()
        champion = self.champion()
        info = self.info()
        base_problems = self.base_problems(verify=verify, info=info) if info is not None else []
        last_action: dict[str, str] = {}
        for entry in self.history():
            last_action[entry.version] = entry.action
        rows = []
        for number in sorted(listing):
            version, names = f"v{number}", listing[number]
            row = VersionInfo(
                version=version,
                status="incomplete",
                champion=champion is not None and champion.version == version,
                last_action=last_action.get(version),
            )
            if MANIFEST not in names:
                row.files = sorted(names - RESERVED_FILES)
                row.problems = [f"no {MANIFEST}: incomplete ({self._claim_note(version, names)})"]
                rows.append(row)
                continue
            try:
                manifest = self.manifest(version)
            except VersionNotValid as err:
                row.status, row.problems = "corrupt", [str(err)]
                rows.append(row)
                continue
            row.files = sorted(manifest.files)
            row.attachments = sorted(names - RESERVED_FILES - set(manifest.files))
            row.parent, row.created_at = manifest.parent, manifest.created_at
            row.recipe, row.tasks = manifest.recipe.get("kind"), list(manifest.tasks)
            if verify:
                row.problems = self._file_problems(version, manifest)
            else:
                row.problems = [f"{n}: missing" for n in sorted(set(manifest.files) - names)]
            row.status = "corrupt" if row.problems else "complete"
            row.gated = layout.DECISION in names or version in last_action or row.champion
            rows.append(row)
        by_id = {row.version: row for row in rows}
        for row in rows:  # id order: a parent's row is final before its children's (parents are older)
            if row.status == "complete" and row.parent is None and base_problems:
                row.status = "corrupt"
                row.problems.append(f"the base snapshot is corrupt, so {row.version} can't be loaded: "
                                    + "; ".join(base_problems))  # fmt: skip
            if row.status == "complete" and row.parent is not None:
                parent = by_id.get(row.parent)
                if parent is None or parent.status != "complete":
                    row.status = "corrupt"
                    row.problems.append(
                        f"parent {row.parent} is {parent.status if parent else 'missing'}: "
                        f"{row.version} can't be loaded"
                    )
        return rows

    def _claim_note(self, version: str, names: set[str]) -> str:
        """Who claimed an incomplete version and when, for ``status`` (a claim is tiny: one read)."""
        files = sorted(names - RESERVED_FILES)
        wrote = f"{len(files)} file(s) written" if files else "no model file written"
        if CLAIM not in names:
            return f"no claim, {wrote}"
        try:
            claim = json.loads(self.store.get(self._vkey(version, CLAIM)))
        except (KeyNotFound, ValueError):
            return f"unreadable claim, {wrote}"
        return (
            f"claimed by {claim.get('actor', '?')} at {claim.get('at', '?')}, {wrote}; its writer stopped, or is "
            f"still writing"
        )

    def manifest(self, version: str) -> Manifest:
        """The version's manifest; :class:`VersionNotValid` when it has none, :class:`VersionNotFound` when the
        version does not exist, :class:`VersionCorrupt` when it is unreadable or names another model/version."""
        check_name("version", version)
        try:
            raw = self.store.get(self._vkey(version, MANIFEST))
        except KeyNotFound:
            if next(iter(self.store.keys(self._vkey(version))), None) is None:
                raise VersionNotFound(
                    f"{self._where(version)} does not exist in {self.store.url}", version=version
                ) from None
            raise VersionNotValid(
                f"{self._where(version)} has no {MANIFEST}: it is incomplete (its writer stopped or is still "
                f"writing) and can't be read or promoted; nothing was changed",
                version=version,
            ) from None
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError as err:
            raise VersionCorrupt(
                f"{self._where(version)}: {MANIFEST} is unreadable ({err.error_count()} errors, first: "
                f"{err.errors()[0]['msg']}); nothing was changed",
                version=version,
                file=MANIFEST,
            ) from None
        if (manifest.model, manifest.version) != (self.model, version):
            raise VersionCorrupt(
                f"{self._vkey(version, MANIFEST)} names {manifest.model}@{manifest.version}, not "
                f"{self._where(version)}; nothing was changed",
                version=version,
                file=MANIFEST,
            )
        return manifest

    def _file_problems(self, version: str, manifest: Manifest) -> list[str]:
        problems = []
        for name, entry in sorted(manifest.files.items()):
            try:
                data = self.store.get(self._vkey(version, name))
            except KeyNotFound:
                problems.append(f"{name}: missing ({self._vkey(version, name)})")
                continue
            if len(data) != entry.size:
                problems.append(f"{name}: size {len(data)} bytes, manifest says {entry.size}")
            if (actual := _sha256(data)) != entry.sha256:
                problems.append(f"{name}: sha256 {actual}, manifest says {entry.sha256}")
        return problems

    def verify(self, version: str) -> list[str]:
        """Every problem with the version (no manifest, unreadable manifest, missing file, size or sha256 mismatch);
        empty when it is complete and valid. Raises :class:`VersionNotFound` for a version that does not exist."""
        try:
            manifest = self.manifest(version)
        except VersionNotFound:
            raise
        except VersionNotValid as err:
            return [str(err)]
        return self._file_problems(version, manifest)

    def _require_valid(self, version: str, doing: str) -> Manifest:
        manifest = self.manifest(version)
        if problems := self._file_problems(version, manifest):
            raise VersionCorrupt(
                f"{self._where(version)} is corrupt, refusing to {doing}: {'; '.join(problems)}. Nothing was changed",
                version=version,
                problems=problems,
            )
        return manifest

    def _require_loadable(self, version: str, doing: str) -> Manifest:
        """:meth:`_require_valid` for ``version`` and every parent back to the base (reads every file once)."""
        manifest = self._require_valid(version, doing)
        seen, parent = {version}, manifest.parent
        while parent is not None:
            if parent in seen:
                raise VersionCorrupt(
                    f"{self._where(version)}: the parent chain loops at {parent}; the manifests were edited. "
                    f"Refusing to {doing}; nothing was changed",
                    version=version,
                )
            seen.add(parent)
            try:
                parent_manifest = self._require_valid(parent, doing)
            except VersionNotValid as err:
                raise VersionCorrupt(
                    f"{self._where(version)} builds on {parent}, which can't be loaded, so neither can "
                    f"{version}: {err}",
                    version=version,
                    problems=[str(err)],
                ) from None
            parent = parent_manifest.parent
        if problems := self.base_problems():
            raise VersionCorrupt(
                f"the base snapshot of {self.model!r} is corrupt, so {self._where(version)} can't be loaded; refusing "
                f"to {doing}: {'; '.join(problems)}. Restore {self._base_prefix} (bucket versioning, a backup); "
                f"nothing was changed",
                version=version,
                problems=problems,
            )
        return manifest

    def read_file(self, version: str, name: str) -> bytes:
        """A model file's bytes, checked against the manifest's sha256 and size (:class:`VersionCorrupt` if not)."""
        manifest = self.manifest(version)
        if name not in manifest.files:
            raise FileNotInVersion(
                f"{name!r} is not a model file of {self._where(version)} (files: {sorted(manifest.files)}); "
                f"attachments are read with read_attachment()"
            )
        entry = manifest.files[name]
        key = self._vkey(version, name)
        try:
            data = self.store.get(key)
        except KeyNotFound:
            raise VersionCorrupt(
                f"{self._where(version)}: {name} is listed in the manifest but missing ({key}); the version is "
                f"corrupt. Nothing was changed",
                version=version,
                file=name,
                expected=entry.sha256,
            ) from None
        actual = _sha256(data)
        if actual != entry.sha256 or len(data) != entry.size:
            raise VersionCorrupt(
                f"{self._where(version)}: {name} has sha256 {actual} ({len(data)} bytes), the manifest expects "
                f"{entry.sha256} ({entry.size} bytes): the file was changed or damaged after it was written ({key}). "
                f"Do not load it; nothing was changed",
                version=version,
                file=name,
                expected=entry.sha256,
                actual=actual,
            )
        return data

    def attach(self, version: str, name: str, data: bytes) -> None:
        """Add a write-once report (metrics.json, decision.json, card.md) to a version that has its manifest."""
        _check_file_name(name)
        manifest = self.manifest(version)
        if name in RESERVED_FILES or name in manifest.files:
            raise RegistryError(
                f"{name!r} is {'reserved' if name in RESERVED_FILES else 'a model file'} in {self._where(version)}; "
                f"attachments can't replace it. Nothing was written"
            )
        try:
            self.store.put_new(self._vkey(version, name), data)
        except KeyExists:
            raise AttachmentExists(
                f"attachment {name!r} of {self._where(version)} already exists ({self._vkey(version, name)}): "
                f"attachments are write-once; nothing was changed"
            ) from None

    def read_attachment(self, version: str, name: str) -> bytes:
        check_name("version", version)
        return self.store.get(self._vkey(version, _check_file_name(name)))

    # --- champion ---------------------------------------------------------------------------------------------------

    def champion(self) -> ChampionPointer | None:
        return self.champion_with_etag()[0]

    def champion_with_etag(self) -> tuple[ChampionPointer | None, str | None]:
        """The pointer and the etag to pass to :meth:`promote` / :meth:`rollback` (``(None, None)``: no champion)."""
        try:
            raw, etag = self.store.get_with_etag(self._champion_key)
        except KeyNotFound:
            return None, None
        try:
            return ChampionPointer.model_validate_json(raw), etag
        except ValidationError as err:
            raise RegistryError(
                f"{self._champion_key} in {self.store.url} is unreadable ({err.errors()[0]['msg']}): it is written "
                f"only by the registry, so it was edited by hand or damaged. Restore it from the store's versioning "
                f"or the last promote/rollback entry in {self._history_key}; nothing was changed"
            ) from None

    def require_champion(self) -> ChampionPointer:
        """The champion pointer; :class:`ModelNotFound` / :class:`NoChampion` when there is none."""
        self._require_info()
        pointer = self.champion()
        if pointer is None:
            self.require_intact_pointer()
            raise NoChampion(f"model {self.model!r} has no champion in {self.store.url}: nothing was promoted yet")
        return pointer

    def lost_champion(self, history: list[HistoryEntry] | None = None) -> HistoryEntry | None:
        """When ``champion.json`` is missing although the history records pointer moves: the last of those moves
        (the champion the store had), else None. A missing pointer with promotions in the history is damage (a
        deleted or lost object), not "no champion": training from the bare base would silently restart the lineage."""
        if self.store.exists(self._champion_key):
            return None
        history = self.history() if history is None else history
        return next((e for e in reversed(history) if e.action in POINTER_ACTIONS), None)

    def require_intact_pointer(self, history: list[HistoryEntry] | None = None) -> None:
        """:class:`ChampionMissing` when :meth:`lost_champion` finds the pointer gone; else nothing."""
        if (last := self.lost_champion(history)) is not None:
            raise ChampionMissing(self._missing_message(last), last=last)

    def _missing_message(self, last: HistoryEntry) -> str:
        return (
            f"{self._champion_key} is missing from {self.store.url}, but {self._history_key} records champions (the "
            f"last: {last.action} of {last.version} at {last.at} by {last.actor}): the champion pointer was deleted or "
            f"lost. Refusing to train, promote or roll back, which would restart the lineage from the bare base. The "
            f"versions and the history are intact; rebuild the pointer from the history with `skillgraft repair` "
            f"(champion {last.version}, or name another former champion)"
        )

    def _read_pointer(
        self, expected_etag: Any, doing: str, history: list[HistoryEntry] | None = None
    ) -> tuple[ChampionPointer | None, str | None]:
        current, etag = self.champion_with_etag()
        if current is None:
            self.require_intact_pointer(history)
        if expected_etag is not READ_NOW and expected_etag != etag:
            raise PromotionConflict(self._conflict_message(current, doing), current=current)
        return current, etag

    def _conflict_message(self, current: ChampionPointer | None, doing: str) -> str:
        now = (
            f"it is now {current.version} (since {current.since}, by {current.actor}: {current.reason})"
            if current
            else "it has no champion now"
        )
        return (
            f"the champion of {self.model!r} changed before {doing}: {now}. Nothing was changed; re-run the gate "
            f"against the current champion, or record the candidate as superseded"
        )

    def _move_pointer(self, pointer: ChampionPointer, etag: str | None, doing: str) -> None:
        data = pointer.model_dump_json(indent=2).encode()
        if self.store.replace_if(self._champion_key, data, etag):
            return
        try:
            now, _ = self.store.get_with_etag(self._champion_key)
        except KeyNotFound:
            now = None
        if now == data:  # our write landed; only its response was lost (and a retry hit the precondition)
            return
        current = ChampionPointer.model_validate_json(now) if now is not None else None
        raise PromotionConflict(self._conflict_message(current, doing), current=current)

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
        """Make ``version`` the champion.

        Refuses (:class:`VersionNotValid`) a version that is not complete with every checksum valid. Pass the
        ``expected_etag`` from :meth:`champion_with_etag` that the gate compared against (``None``: "there was no
        champion"); when the pointer moved since, :class:`PromotionConflict` carries the current champion and nothing
        is written. A version whose last history decision is ``reject`` needs ``force=True``; the history entry
        records ``forced``.

        ``move_id`` makes a retried call idempotent: when the pointer already names ``version`` with this
        ``move_id``, it is this caller's own earlier attempt that landed (its answer, or the history append after it,
        was lost), so the history entry is completed and that pointer returned instead of a conflict.
        """
        actor = actor or self.actor
        doing = f"promoting {version}"
        if move_id is not None:
            current = self.champion()
            if current is not None and current.version == version and current.move_id == move_id:
                self._append(self._move_entry(current), once=True)
                return current
        self._require_loadable(version, "promote it")
        current, etag = self._read_pointer(expected_etag, doing)
        if current is not None and current.version == version:
            raise RegistryError(f"{self._where(version)} is already the champion; nothing was changed")
        history = self.history()
        if not force:
            last = next((e for e in reversed(history) if e.version == version), None)
            if last is not None and last.action == "reject":
                raise PromotionRefused(
                    f"{self._where(version)} was rejected ({last.at}, by {last.actor}: {last.reason}); pass "
                    f"force=True to promote it anyway (recorded as forced). Nothing was changed"
                )
        previous = current.version if current else None
        self._log_unlogged_move(current, history)
        pointer = ChampionPointer(
            version=version, previous=previous, since=utcnow(), reason=reason, actor=actor, forced=force,
            move_id=move_id,
        )  # fmt: skip
        self._move_pointer(pointer, etag, doing)
        self._append(self._move_entry(pointer))
        return pointer

    @staticmethod
    def _move_entry(pointer: ChampionPointer) -> HistoryEntry:
        """The history entry of a promotion, built only from its pointer: a retry that finishes an interrupted
        promotion writes the very line the first attempt would have (so ``_append(once=True)`` never doubles it)."""
        return HistoryEntry.model_validate(
            {
                "action": "promote",
                "version": pointer.version,
                "from": pointer.previous,
                "reason": pointer.reason,
                "actor": pointer.actor,
                "at": pointer.since,
                "forced": pointer.forced,
            }
        )

    def reject(self, version: str, *, reason: str, actor: str | None = None) -> HistoryEntry:
        """Record that ``version`` was not promoted; the champion is unchanged."""
        return self.record("reject", version, reason, actor)

    def record(self, action: str, version: str, reason: str, actor: str | None = None, **extra: Any) -> HistoryEntry:
        """Append a history entry that moves nothing (``reject``, ``superseded``, ``post-check-failed``...).

        ``promote`` and ``rollback`` are written only by :meth:`promote` / :meth:`rollback`, with the pointer move.
        """
        if not isinstance(action, str) or not _ACTION.fullmatch(action):
            raise RegistryError(f"invalid history action {action!r}: use a-z, 0-9, '_', '-'; nothing was written")
        if action in POINTER_ACTIONS:
            raise RegistryError(f"{action!r} entries are written by Registry.{action}() with the pointer move")
        if clash := sorted(set(extra) & (set(HistoryEntry.model_fields) | {"from"})):
            raise RegistryError(f"extra history fields {clash} clash with standard ones; nothing was written")
        check_name("version", version)
        if next(iter(self.store.keys(self._vkey(version))), None) is None:
            raise VersionNotFound(
                f"{self._where(version)} does not exist; no {action!r} entry written", version=version
            )
        entry = HistoryEntry.model_validate(
            {
                "action": action,
                "version": version,
                "reason": reason,
                "actor": actor or self.actor,
                "at": utcnow(),
                **extra,
            }
        )
        self._append(entry)
        return entry

    def rollback(
        self,
        to: str | None = None,
        *,
        reason: str,
        actor: str | None = None,
        expected_etag: str | None = READ_NOW,
        force: bool = False,
    ) -> ChampionPointer:
        """Move the champion back to a former champion: ``to``, or by default the current pointer's ``previous``.

        The new pointer's ``previous`` is what ``to`` had as ``previous`` when it last became champion, so a
        second rollback goes further back instead of bouncing (see the module docstring). Raises
        :class:`NoPreviousChampion` when there is nothing to go back to, :class:`VersionNotValid` when the target is
        not complete and valid, :class:`PromotionConflict` when the pointer moved; in each case nothing is changed.

        A target that was champion only through forced promotions (every promotion of it in the history is
        ``forced``) is refused with :class:`PromotionRefused` unless ``force=True``; the rollback is then recorded as
        forced too: going back to it overrides the gate again.
        """
        actor = actor or self.actor
        current, etag = self._read_pointer(expected_etag, "rolling back")
        if current is None:
            raise NoPreviousChampion(
                f"model {self.model!r} has no champion, so nothing to roll back; nothing was changed"
            )
        target = to if to is not None else current.previous
        if target is None:
            raise NoPreviousChampion(
                f"{self._where(current.version)} is champion with no previous champion recorded, so there is nothing "
                f"to roll back to; nothing was changed. Name a former champion (`skillgraft rollback VERSION`), or "
                f"promote another version (`skillgraft promote VERSION`)"
            )
        check_name("version", target)
        if target == current.version:
            raise RegistryError(f"{self._where(target)} is already the champion; nothing was changed")
        if next(iter(self.store.keys(self._vkey(target))), None) is None:
            raise VersionNotFound(
                f"{self._where(target)} does not exist in {self.store.url}; nothing was changed", version=target
            )
        history = self.history()
        was_champion, previous = self._previous_when_champion(target, current, history)
        if not was_champion:
            raise RegistryError(
                f"{self._where(target)} was never champion, so it is not a rollback target; promote it instead "
                f"(`skillgraft promote {target}`, with --force if the gate rejected it). Nothing was changed"
            )
        promotions = [e for e in history if e.version == target and e.action == "promote"]
        forced = bool(promotions) and all(e.forced for e in promotions)
        if forced and not force:
            last = promotions[-1]
            raise PromotionRefused(
                f"{self._where(target)} was champion only through a forced promotion ({last.at}, by {last.actor}: "
                f"{last.reason}), past the gate; rolling back to it overrides the gate again, so it needs force "
                f"(recorded as forced). Nothing was changed"
            )
        self._require_loadable(target, "roll back to it")
        self._log_unlogged_move(current, history)
        pointer = ChampionPointer(
            version=target, previous=previous, since=utcnow(), reason=reason, actor=actor, action="rollback",
            forced=forced,
        )  # fmt: skip
        self._move_pointer(pointer, etag, f"rolling back to {target}")
        fields: dict[str, Any] = {
            "action": "rollback",
            "version": target,
            "from": current.version,
            "previous": previous,
            "reason": reason,
            "actor": actor,
            "at": pointer.since,
        }
        self._append(HistoryEntry.model_validate({**fields, **({"forced": True} if forced else {})}))
        return pointer

    def _previous_when_champion(
        self, target: str, current: ChampionPointer | None, history: list[HistoryEntry]
    ) -> tuple[bool, str | None]:
        """Was ``target`` ever champion, and what was its pointer's ``previous`` the last time it became champion?"""
        for entry in reversed(history):
            if entry.version != target:
                continue
            if entry.action == "promote":
                return True, entry.from_version
            if entry.action in ("rollback", "repair"):
                return True, entry.previous
        # The pointer names it as previous but history lacks the entry (a crash between move and append).
        return (True, None) if current is not None and current.previous == target else (False, None)

    def repair(self, to: str | None = None, *, reason: str, actor: str | None = None) -> ChampionPointer:
        """Rebuild a missing ``champion.json`` from the history (see :meth:`lost_champion`): the champion the last
        pointer move in the history set, or ``to``, a former champion. Its ``previous`` comes from the history as
        for a rollback. The pointer is written only if still absent; the history records a ``repair``.

        Raises :class:`RegistryError` when the pointer is present or the history records no champion (nothing to
        rebuild), :class:`VersionNotValid` when the target can't be loaded; nothing is changed in each case.
        """
        actor = actor or self.actor
        self._require_info()
        history = self.history()
        if self.store.exists(self._champion_key):
            current = self.champion()
            raise RegistryError(
                f"{self._champion_key} is present (champion {current.version if current else '?'}); nothing to "
                f"repair, nothing was changed. To move the champion use promote or rollback"
            )
        last = self.lost_champion(history)
        if last is None:
            raise RegistryError(
                f"the history of {self.model!r} records no champion, so there is no pointer to rebuild: nothing was "
                f"ever promoted. Nothing was changed"
            )
        target = check_name("version", to) if to is not None else last.version
        was_champion, previous = self._previous_when_champion(target, None, history)
        if not was_champion:
            raise RegistryError(
                f"{self._where(target)} was never champion according to {self._history_key}; repair restores a former "
                f"champion (the last one was {last.version}). Nothing was changed"
            )
        self._require_loadable(target, "make it champion again")
        promotions = [e for e in history if e.version == target and e.action == "promote"]
        forced = bool(promotions) and all(e.forced for e in promotions)
        why = f"{reason}; {layout.CHAMPION} was missing, rebuilt from the history (last move: {last.action} of " \
              f"{last.version} at {last.at})"  # fmt: skip
        pointer = ChampionPointer(version=target, previous=previous, since=utcnow(), reason=why, actor=actor,
                                  action="repair", forced=forced)  # fmt: skip
        self._move_pointer(pointer, None, f"repairing the champion pointer with {target}")
        fields: dict[str, Any] = {"action": "repair", "version": target, "from": None, "previous": previous,
                                  "reason": why, "actor": actor, "at": pointer.since}  # fmt: skip
        self._append(HistoryEntry.model_validate({**fields, **({"forced": True} if forced else {})}))
        return pointer

    def unchecked_champion(
        self, current: ChampionPointer | None = READ_NOW, history: list[HistoryEntry] | None = None
    ) -> ChampionPointer | None:
        """The champion pointer when the champion was *promoted* and the history records no post-promotion check of
        it since (a run or a ``promote`` stopped between moving the pointer and the check), else None. Rollbacks
        and repairs return to a former champion and need no check. See :data:`CHECK_ACTIONS`."""
        if current is READ_NOW:
            current = self.champion()
        if current is None or current.action != "promote":
            return None
        history = self.history() if history is None else history
        start = next(
            (i for i in range(len(history) - 1, -1, -1)
             if history[i].action in POINTER_ACTIONS and (history[i].version, history[i].at) == (current.version, current.since)),
            len(history),
        )  # fmt: skip
        if any(e.version == current.version and e.action in CHECK_ACTIONS for e in history[start:]):
            return None
        return current

    # --- history ----------------------------------------------------------------------------------------------------

    def history(self) -> list[HistoryEntry]:
        try:
            raw = self.store.get(self._history_key)
        except KeyNotFound:
            return []
        entries = []
        for number, line in enumerate(raw.decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(HistoryEntry.model_validate_json(line))
            except ValidationError as err:
                raise RegistryError(
                    f"{self._history_key} line {number} is not a history entry ({err.errors()[0]['msg']}); "
                    f"fix or remove that line (the log is append-only: nothing else edits it)"
                ) from None
        return entries

    def unlogged_move(
        self, current: ChampionPointer | None = READ_NOW, history: list[HistoryEntry] | None = None
    ) -> HistoryEntry | None:
        """The history entry for the current pointer when the log lacks it (a writer stopped between moving the
        pointer and appending to the log), else None. The entry is rebuilt from the pointer, marked ``recovered``."""
        if current is READ_NOW:
            current = self.champion()
        if current is None:
            return None
        history = self.history() if history is None else history
        moves = [e for e in history if e.action in POINTER_ACTIONS]
        if moves and (moves[-1].version, moves[-1].at) == (current.version, current.since):
            return None
        fields: dict[str, Any] = {
            "action": current.action,
            "version": current.version,
            "from": moves[-1].version if moves else None,
            "reason": current.reason,
            "actor": current.actor,
            "at": current.since,
            "recovered": True,
        }
        if current.action in ("rollback", "repair"):
            fields["previous"] = current.previous
        if current.forced:
            fields["forced"] = True
        return HistoryEntry.model_validate(fields)

    def _log_unlogged_move(self, current: ChampionPointer | None, history: list[HistoryEntry]) -> None:
        """Before moving the pointer: append the entry an interrupted writer left out (once, even when racing)."""
        if (entry := self.unlogged_move(current, history)) is not None:
            self._append(entry, once=True)

    def _append(self, entry: HistoryEntry, *, once: bool = False) -> None:
        """Append one line; ``once``: not if the log holds that exact line already (recovered entries are built
        deterministically from the pointer, so two writers repairing the same gap write one line)."""
        line = entry.to_line()
        for attempt in range(_HISTORY_ATTEMPTS):
            try:
                data, etag = self.store.get_with_etag(self._history_key)
            except KeyNotFound:
                data, etag = b"", None
            if (attempt or once) and line in data:  # an earlier attempt landed (or another writer's, for `once`)
                return
            if entry.action in POINTER_ACTIONS and _logged_as_recovered(data, entry):
                return  # another writer saw our pointer move before we logged it and logged it for us
            if self.store.replace_if(self._history_key, data + line, etag):
                return
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # another writer appended: re-read and retry
        raise RegistryError(
            f"could not append to {self._history_key} after {_HISTORY_ATTEMPTS} attempts (heavy contention); any "
            f"champion move already made stands, but this entry was not logged: {line.decode().strip()}"
        )


__all__ = [
    "READ_NOW",
    "AttachmentExists",
    "BaseMismatch",
    "CHECK_ACTIONS",
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
    "default_actor",
]
