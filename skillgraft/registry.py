"""The model registry: versions, the champion pointer, promote / reject / rollback, and the history log.

Built only on the :class:`~skillgraft.store.ObjectStore` primitives, so it behaves the same on a local directory and on
S3. Layout of one model (keys relative to the store root)::

    models/<model>/model.json                  written once: name, base (BaseRef), created_at
    models/<model>/base/...                    optional base snapshot files (put_base_file)
    models/<model>/versions/<v>/claim.json     written FIRST with put_new: allocates the id <v> (v1, v2, ...)
    models/<model>/versions/<v>/<file>         model files, write-once (delta.safetensors, ...)
    models/<model>/versions/<v>/manifest.json  written LAST, with sha256 + size of every model file
    models/<model>/versions/<v>/<attachment>   write-once reports added later (metrics.json, decision.json, card.md)
    models/<model>/champion.json               the pointer; moved only by a conditional write on its etag
    models/<model>/history.jsonl               append-only log (append = read + conditional replace, retried)

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
  ``"forced": true``).
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

from skillgraft.names import check_name
from skillgraft.refs import BaseRef, FileEntry, Manifest, VersionRef, utcnow
from skillgraft.store.base import KeyExists, KeyNotFound, ObjectStore

MANIFEST = "manifest.json"
CLAIM = "claim.json"
RESERVED_FILES = frozenset({MANIFEST, CLAIM})
POINTER_ACTIONS = frozenset({"promote", "rollback"})

_VERSION_ID = re.compile(r"^v([1-9][0-9]*)$")
_FILE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
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
    """The version's recorded decision forbids the promotion (it was rejected); ``force=True`` overrides."""


# --- typed records --------------------------------------------------------------------------------------------------


class ModelInfo(BaseModel):
    """``models/<model>/model.json``."""

    name: str
    base: BaseRef
    created_at: str = Field(default_factory=utcnow)


class ChampionPointer(BaseModel):
    """``models/<model>/champion.json``: which version serves, since when, why, and which champion it replaced."""

    version: str
    previous: str | None = None
    since: str
    reason: str
    actor: str
    action: Literal["promote", "rollback"] = Field(
        "promote", description="the move that set this pointer (so a missing history entry can be written later)"
    )
    forced: bool = False


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
    if (
        not isinstance(name, str)
        or not name
        or any(not _FILE_SEGMENT.fullmatch(part) or ".." in part for part in name.split("/"))
    ):
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
        self._root = f"models/{self.model}"

    # --- keys -------------------------------------------------------------------------------------------------------

    def _vkey(self, version: str, name: str = "") -> str:
        return f"{self._root}/versions/{version}/{name}"

    @property
    def _champion_key(self) -> str:
        return f"{self._root}/champion.json"

    @property
    def _history_key(self) -> str:
        return f"{self._root}/history.jsonl"

    def _where(self, version: str | None = None) -> str:
        return f"{self.model}@{version}" if version else f"model {self.model!r}"

    # --- model ------------------------------------------------------------------------------------------------------

    def init(self, base: BaseRef) -> ModelInfo:
        """Register the model with its base. Idempotent for the same base (same ``sha256``, the weights' identity);
        raises :class:`BaseMismatch` for a different one."""
        info = ModelInfo(name=self.model, base=base)
        try:
            self.store.put_new(f"{self._root}/model.json", info.model_dump_json(indent=2).encode())
            return info
        except KeyExists:
            existing = self.info()
            if existing is None:  # put_new said it exists, then it was gone: someone deletes under models/
                raise RegistryError(
                    f"{self._root}/model.json vanished while registering {self.model!r} in {self.store.url}: "
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
            return ModelInfo.model_validate_json(self.store.get(f"{self._root}/model.json"))
        except KeyNotFound:
            return None

    def _require_info(self) -> ModelInfo:
        info = self.info()
        if info is None:
            raise ModelNotFound(
                f"model {self.model!r} is not registered in {self.store.url} (no {self._root}/model.json): "
                f"call Registry.init(base) first; nothing was written"
            )
        return info

    def put_base_file(self, name: str, data: bytes) -> None:
        """Write-once; writing the same bytes again is a no-op, different bytes raise."""
        key = f"{self._root}/base/{_check_file_name(name)}"
        try:
            self.store.put_new(key, data)
        except KeyExists:
            if self.store.get(key) != data:
                raise RegistryError(
                    f"base file {name!r} of model {self.model!r} already exists with other content ({key}): base "
                    f"snapshots are write-once; nothing was changed"
                ) from None

    def get_base_file(self, name: str) -> bytes:
        return self.store.get(f"{self._root}/base/{_check_file_name(name)}")

    def has_base_snapshot(self) -> bool:
        return next(iter(self.store.keys(f"{self._root}/base/")), None) is not None

    # --- versions ---------------------------------------------------------------------------------------------------

    def _listing(self) -> dict[int, set[str]]:
        """Version number → names present under its folder (one listing)."""
        prefix = f"{self._root}/versions/"
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
            rows.append(row)
        by_id = {row.version: row for row in rows}
        for row in rows:  # id order: a parent's row is final before its children's (parents are older)
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
            raise NoChampion(f"model {self.model!r} has no champion in {self.store.url}: nothing was promoted yet")
        return pointer

    def _read_pointer(self, expected_etag: Any, doing: str) -> tuple[ChampionPointer | None, str | None]:
        current, etag = self.champion_with_etag()
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
    ) -> ChampionPointer:
        """Make ``version`` the champion.

        Refuses (:class:`VersionNotValid`) a version that is not complete with every checksum valid. Pass the
        ``expected_etag`` from :meth:`champion_with_etag` that the gate compared against (``None``: "there was no
        champion"); when the pointer moved since, :class:`PromotionConflict` carries the current champion and nothing
        is written. A version whose last history decision is ``reject`` needs ``force=True``; the history entry
        records ``forced``.
        """
        actor = actor or self.actor
        doing = f"promoting {version}"
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
            version=version, previous=previous, since=utcnow(), reason=reason, actor=actor, forced=force
        )
        self._move_pointer(pointer, etag, doing)
        self._append(
            HistoryEntry.model_validate(
                {
                    "action": "promote",
                    "version": version,
                    "from": previous,
                    "reason": reason,
                    "actor": actor,
                    "at": pointer.since,
                    "forced": force,
                }
            )
        )
        return pointer

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
    ) -> ChampionPointer:
        """Move the champion back to a former champion: ``to``, or by default the current pointer's ``previous``.

        The new pointer's ``previous`` is what ``to`` had as ``previous`` when it last became champion, so a
        second rollback goes further back instead of bouncing (see the module docstring). Raises
        :class:`NoPreviousChampion` when there is nothing to go back to, :class:`VersionNotValid` when the target is
        not complete and valid, :class:`PromotionConflict` when the pointer moved; in each case nothing is changed.
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
                f"to roll back to; nothing was changed. Name a former champion with to=<version>, or promote another"
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
                f"(promote(..., force=True) if it was rejected). Nothing was changed"
            )
        self._require_loadable(target, "roll back to it")
        self._log_unlogged_move(current, history)
        pointer = ChampionPointer(
            version=target, previous=previous, since=utcnow(), reason=reason, actor=actor, action="rollback"
        )
        self._move_pointer(pointer, etag, f"rolling back to {target}")
        self._append(
            HistoryEntry.model_validate(
                {
                    "action": "rollback",
                    "version": target,
                    "from": current.version,
                    "previous": previous,
                    "reason": reason,
                    "actor": actor,
                    "at": pointer.since,
                }
            )
        )
        return pointer

    def _previous_when_champion(
        self, target: str, current: ChampionPointer, history: list[HistoryEntry]
    ) -> tuple[bool, str | None]:
        """Was ``target`` ever champion, and what was its pointer's ``previous`` the last time it became champion?"""
        for entry in reversed(history):
            if entry.version != target:
                continue
            if entry.action == "promote":
                return True, entry.from_version
            if entry.action == "rollback":
                return True, entry.previous
        # The pointer names it as previous but history lacks the entry (a crash between move and append).
        return (True, None) if current.previous == target else (False, None)

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
        if current.action == "rollback":
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
