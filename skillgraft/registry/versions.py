"""The version store of one model: its registration (model.json), base snapshot, and versions with their files,
manifests and attachments. Write-once throughout: a version is claimed (claim.json), its files written, its manifest
written last; nothing here is ever overwritten. The champion and the history are :mod:`skillgraft.registry.champion`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from skillgraft import layout
from skillgraft.names import check_name
from skillgraft.refs import BaseRef, FileEntry, Manifest, VersionRef, utcnow
from skillgraft.registry.errors import (
    AttachmentExists,
    BaseMismatch,
    FileNotInVersion,
    ModelNotFound,
    RegistryError,
    VersionCorrupt,
    VersionNotFound,
    VersionNotValid,
)
from skillgraft.registry.records import CLAIM, MANIFEST, RESERVED_FILES, ModelInfo, VersionInfo
from skillgraft.store.base import KeyExists, KeyNotFound, ObjectStore

if TYPE_CHECKING:
    from skillgraft.registry.records import ChampionPointer, HistoryEntry

_VERSION_ID = re.compile(r"^v([1-9][0-9]*)$")


def _check_file_name(name: str) -> str:
    """A model file / attachment / base file name: '/'-separated segments of A-Z a-z 0-9 _ . - (no '..')."""
    if not layout.is_file_name(name):
        raise RegistryError(
            f"invalid file name {name!r}: use '/'-separated parts of letters, digits, '_', '.', '-' (starting with a "
            f"letter or digit, no '..'); nothing was written"
        )
    return name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class VersionStore:
    """The versions of one model in a store (see the module docstring). Cheap to construct; holds no cache."""

    def __init__(self, store: ObjectStore, model: str, *, actor: str) -> None:
        self.store = store
        self.model = check_name("model", model)
        self.actor = actor

    # --- keys ---------------------------------------------------------------------------------------------------------

    def _vkey(self, version: str, name: str = "") -> str:
        return layout.version_file_key(self.model, version, name)

    @property
    def _info_key(self) -> str:
        return layout.model_info_key(self.model)

    @property
    def _base_prefix(self) -> str:
        return layout.base_prefix(self.model)

    def _where(self, version: str | None = None) -> str:
        return f"{self.model}@{version}" if version else f"model {self.model!r}"

    # --- model --------------------------------------------------------------------------------------------------------

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

    def require_info(self) -> ModelInfo:
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
        info = info or self.require_info()
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

    # --- versions -----------------------------------------------------------------------------------------------------

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
        info = self.require_info()
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

    def rows(
        self,
        *,
        verify: bool,
        current: Callable[[], ChampionPointer | None],
        history: Callable[[], list[HistoryEntry]],
    ) -> list[VersionInfo]:
        """:meth:`Registry.versions`: every version with its status. ``current`` and ``history`` read the champion
        pointer and the history log (for the champion flag, the last action and gating), after the listing."""
        listing = self._listing()
        champion = current()
        info = self.info()
        base_problems = self.base_problems(verify=verify, info=info) if info is not None else []
        last_action: dict[str, str] = {}
        for entry in history():
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

    def exists(self, version: str) -> bool:
        """Is there any object under ``versions/<version>/`` (complete or not)?"""
        return next(iter(self.store.keys(self._vkey(version))), None) is not None

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

    def require_loadable(self, version: str, doing: str) -> Manifest:
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
