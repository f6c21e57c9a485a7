"""The landing zone, the accepted batches and the quarantine of every task, on any :class:`ObjectStore`.

Keys: see :mod:`skillgraft.layout` (``tasks/<task>/...``, the landing zone ``incoming/<task>/``, ``quarantine/``).
:class:`Intake` is the one entry point and orchestrates the parts: :class:`~skillgraft.data.landing.LandingZone` and
:class:`~skillgraft.data.landing.Quarantine` (landing.py), :class:`~skillgraft.data.image_refs.ImageRefs` (the images
data files reference) and :class:`~skillgraft.data.batches.BatchStore` (task specs and accepted batches); validation
itself is :mod:`skillgraft.data.validate`.

Ingesting a data file always moves it out of the landing zone (copy, read back and compare, then delete): into a batch,
into quarantine, or nowhere when the same bytes are already an accepted batch of the task (``duplicate``). A landed
entry that is not a plain file (a symbolic link, a linked folder, a FIFO: :class:`~skillgraft.store.base.UnsafeFile`)
is never read: a report alone goes to quarantine (rule ``unsafe_file``) and the link itself is removed, never what it
points to; an image reached through a link is an ``image`` problem of the file that references it. A batch
exists only once its ``batch.json`` is written; a half-written batch folder is completed by the next ingest.

Raises (all :class:`IntakeError`): :class:`UnknownTask`, :class:`TaskSpecConflict`, :class:`BatchRejected` (from
:meth:`Intake.accept_examples`), :class:`BatchCorrupted` (a stored split whose checksum no longer matches).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillgraft import layout
from skillgraft.data import io as data_io
from skillgraft.data.batches import BatchManifest, BatchStore, ReportSummary, jsonl
from skillgraft.data.errors import BatchCorrupted, BatchRejected, IntakeError, TaskSpecConflict, UnknownTask
from skillgraft.data.image_refs import ImageRefs
from skillgraft.data.io import DataError, ImageError, Record, UnsupportedFormat, file_format, iter_records
from skillgraft.data.keyindex import KEY_HEX, key_values
from skillgraft.data.landing import IngestResult, LandingZone, Quarantine
from skillgraft.data.spec import Example, TaskSpec
from skillgraft.data.split import Side, assign_sides, eval_score, example_key
from skillgraft.data.validate import (
    FileChecks,
    ValidationReport,
    chunk_spec,
    parse_failure_report,
    rejection_report,
    validate_records,
)
from skillgraft.names import InvalidName, check_name
from skillgraft.refs import BatchRef
from skillgraft.store.base import KeyNotFound, ObjectStore, UnsafeFile

safe_file_name = layout.safe_file_name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _ImageProblem(Exception):
    def __init__(self, report: ValidationReport) -> None:
        self.report = report


@dataclass(frozen=True)
class Validated:
    """An accepted file's splits (JSONL bytes) and their keys (uint64 arrays), ready to store."""

    splits: Mapping[Side, bytes]
    keys: Mapping[Side, Any]
    images: frozenset[str] = frozenset()
    """The image references the file made as landed (the landed images it takes)."""

    @classmethod
    def of(cls, records: list[Record], sides: list[Side], images: frozenset[str]) -> Validated:
        return cls(
            images=images,
            splits={side: jsonl(r.example for r, s in zip(records, sides) if s == side) for side in ("train", "eval")},
            keys={
                side: key_values(example_key(r.example)[:KEY_HEX] for r, s in zip(records, sides) if s == side)
                for side in ("train", "eval")
            },
        )

    @classmethod
    def settled(
        cls, parts: Mapping[Side, list[bytes]], keys: Any, is_eval: Any, given: Any, images: frozenset[str]
    ) -> Validated:
        """From a file validated in chunks: ``parts`` were written with the sides ``given`` (before the whole-file
        tiny-batch rule); the (rare) rows that rule moved are moved between the splits here."""
        splits = {side: b"".join(parts[side]) for side in ("train", "eval")}
        for chunks in parts.values():
            chunks.clear()  # the joined splits replace the parts: one copy in memory, not two
        moved = {int(k) for k in keys[is_eval != given]}
        if moved:
            lines = {side: splits[side].splitlines(keepends=True) for side in ("train", "eval")}
            keep: dict[Side, list[bytes]] = {"train": [], "eval": []}
            for side, other in (("train", "eval"), ("eval", "train")):
                for line in lines[side]:
                    k = int(example_key(Example.model_validate_json(line))[:KEY_HEX], 16)
                    keep[other if k in moved else side].append(line)
            splits = {side: b"".join(keep[side]) for side in ("train", "eval")}
        return cls(splits=splits, keys={"eval": keys[is_eval], "train": keys[~is_eval]}, images=images)


class Intake:
    """Task registration, the landing zone and the accepted batches, on one object store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.batch_store = BatchStore(store)
        self.image_refs = ImageRefs(store)
        self.landing = LandingZone(store, self.image_refs, self.batch_store.task_spec)
        self.quarantine = Quarantine(store, self.landing)

    # --- tasks (BatchStore) -------------------------------------------------------------------------------------------

    def register_task(self, spec: TaskSpec) -> TaskSpec:
        """Write ``tasks/<name>/task.json`` once; registering the same spec again is a no-op, a different one raises."""
        return self.batch_store.register_task(spec)

    def task_spec(self, name: str) -> TaskSpec:
        return self.batch_store.task_spec(name)

    def tasks(self) -> list[str]:
        return self.batch_store.tasks()

    def guards(self) -> list[str]:
        """Registered guard sets (task specs with ``role: guard``)."""
        return self.batch_store.guards()

    # --- the landing zone (LandingZone) -------------------------------------------------------------------------------

    def submit(self, task: str, path: str | os.PathLike[str]) -> str:
        """Copy a local file into ``incoming/<task>/<safe file name>``; returns the key.

        The same bytes already landed under that name: nothing is written. Different bytes under that name: the
        new file lands as ``<stem>-<hash>.<ext>``. Raises :class:`UnknownTask` for a task that is not registered.
        """
        check_name("task", task)
        spec = self.task_spec(task)
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise IntakeError(f"cannot read {path}: {e.strerror or e}; nothing was submitted") from None
        self.landing.land_images(spec, path, data)  # first: a watcher that sees the data file finds its images there
        return self.landing.land(task, safe_file_name(path.name), data)

    def incoming(self, task: str | None = None) -> list[str]:
        """Keys waiting in the landing zone (of one task, or all)."""
        return self.landing.incoming(task)

    def landed_images(self, task: str) -> list[str]:
        """Image keys waiting in ``incoming/<task>/`` (taken by the data files that reference them)."""
        return self.landing.landed_images(task)

    def orphaned_images(self, task: str | None = None) -> list[str]:
        """:meth:`LandingZone.orphaned_images`: landed images no waiting data file of their task references."""
        return self.landing.orphaned_images(task)

    # --- ingesting ----------------------------------------------------------------------------------------------------

    def ingest(self, task: str | None = None) -> list[IngestResult]:
        """Ingest every file of the landing zone (of one task, or all)."""
        results = []
        for key in self.incoming(task):
            try:
                results.append(self.ingest_key(key))
            except KeyNotFound as e:
                if e.key != key:
                    raise
                # taken by another ingester since the listing
        return results

    def ingest_key(self, key: str) -> IngestResult:
        """Validate one landed file and move it: into a new batch, into quarantine, or away as a duplicate."""
        parts = key.split("/")
        if len(parts) < 2 or not layout.in_landing_zone(key):
            raise ValueError(f"{key!r} is not in the landing zone: expected {layout.INCOMING_PREFIX}<task>/<file>")
        try:
            data = self.store.get(key)
        except UnsafeFile as e:  # a link (or FIFO, device) in a local landing zone: never read, never copied
            return self.quarantine.refuse_unsafe(key, e)
        batch_id = layout.batch_id(data)
        if len(parts) == 2:
            file = safe_file_name(parts[1])
            message = f"file is not inside a task folder: put it under {layout.INCOMING_PREFIX}<task>/"
            report = rejection_report("task_name", message, file=file, batch_id=batch_id)
            return self.quarantine.put(key, None, file, data, report)
        task, file = parts[1], safe_file_name("_".join(parts[2:]))
        try:
            check_name("task", task)
        except InvalidName as e:
            report = rejection_report("task_name", str(e), file=file, batch_id=batch_id)
            return self.quarantine.put(key, None, file, data, report)
        try:
            spec = self.task_spec(task)
        except UnknownTask as e:
            report = rejection_report("unknown_task", str(e), file=file, batch_id=batch_id, task=task)
            return self.quarantine.put(key, task, file, data, report)

        if self.batch_store.has_batch(task, batch_id):
            return self._duplicate(key, task, file, data, batch_id)

        blobs: dict[str, bytes] = {}
        report, batch = self._validate(spec, file, data, batch_id, self.image_refs.landing_reader(task), blobs)
        if batch is None:
            return self.quarantine.put(key, task, file, data, report)
        return self._accept(key, spec, file, data, batch_id, report, batch, blobs)

    def check(self, task: str, path: str | os.PathLike[str], spec: TaskSpec | None = None) -> ValidationReport:
        """Run the intake's checks on a local file without submitting it (nothing is written to the store); its
        images are read relative to its folder. ``spec``: check against this spec (not registered) instead of the
        registered one — for a task that is not registered yet."""
        path = Path(path)
        data = path.read_bytes()
        reader = self.image_refs.local_reader(task, path.parent.resolve())
        spec = spec if spec is not None else self.task_spec(task)
        report, _ = self._validate(spec, safe_file_name(path.name), data, layout.batch_id(data), reader)
        return report

    def _validate(
        self,
        spec: TaskSpec,
        file: str,
        data: bytes,
        batch_id: str,
        read_image=None,
        blobs: dict[str, bytes] | None = None,
    ) -> tuple[ValidationReport, Validated | None]:
        """Read, split and validate ``data``: the report, and the batch's splits when it passed.

        A file of up to :data:`~skillgraft.data.io.CHUNK_ROWS` examples is validated at once (one GX run); a larger
        one chunk by chunk (:class:`~skillgraft.data.validate.FileChecks`), so memory stays bounded by a chunk plus
        the file's bytes and splits.
        """
        seen_eval, seen_train = self.batch_store.leak_keys(spec)  # store errors propagate: the file stays landed
        read_image = read_image or self.image_refs.landing_reader(spec.name)
        try:
            chunks = iter_records(data, file, answer_type=spec.answer_type, chunk_rows=data_io.CHUNK_ROWS)
            first = next(chunks)
            second = next(chunks, None)
            images: set[str] = set()
            if second is None:
                images.update(r.example.image for r in first if r.example.image is not None)
                records = self._resolve(spec, file, batch_id, first, read_image, blobs)
                sides = (["eval"] * len(records) if spec.role == "guard"  # a guard is held out whole
                         else assign_sides([r.example for r in records], spec.eval_fraction))  # fmt: skip
                report = validate_records(
                    records, sides, spec, file=file, batch_id=batch_id, existing_eval=seen_eval,
                    existing_train=seen_train,
                )  # fmt: skip
                return report, Validated.of(records, sides, frozenset(images)) if report.success else None
            checks = FileChecks(spec, file=file, batch_id=batch_id, existing_train=seen_train)
            parts: dict[Side, list[bytes]] = {"train": [], "eval": []}
            for records in itertools.chain([first, second], chunks):
                images.update(r.example.image for r in records if r.example.image is not None)
                records = self._resolve(spec, file, batch_id, records, read_image, blobs)
                keys = [example_key(r.example)[:KEY_HEX] for r in records]
                sides: list[Side] = ["eval" if spec.role == "guard" or eval_score(k) < spec.eval_fraction else "train"
                                     for k in keys]  # fmt: skip
                report = validate_records(records, sides, chunk_spec(spec), file=file, batch_id=batch_id,
                                          existing_eval=seen_eval)  # fmt: skip
                checks.add(records, keys, sides, report)
                for side in ("train", "eval"):
                    parts[side].append(jsonl(r.example for r, s in zip(records, sides) if s == side))
            report, keys, is_eval, given = checks.finish()
            if not report.success:
                return report, None
            return report, Validated.settled(parts, keys, is_eval, given, frozenset(images))
        except _ImageProblem as e:
            return e.report, None
        except DataError as e:
            return parse_failure_report(e, batch_id=batch_id, task=spec.name), None
        except Exception as e:  # noqa: BLE001 - a reader/validator bug must not leave the file landed forever
            message = (
                f"validation itself failed ({type(e).__name__}: {e}); this is a bug in skillgraft, please "
                "report it with this file"
            )
            return rejection_report("internal_error", message, file=file, batch_id=batch_id, task=spec.name), None

    def _resolve(
        self, spec: TaskSpec, file: str, batch_id: str, records: list[Record], read_image, blobs
    ) -> list[Record]:
        if not any(r.example.image is not None for r in records):
            return records
        try:
            return self.image_refs.resolve(spec.name, file, records, read_image, blobs)
        except ImageError as e:
            report = parse_failure_report(e, batch_id=batch_id, task=spec.name)
            raise _ImageProblem(report.model_copy(update={"rows": len(records)})) from None

    def _accept(
        self,
        key: str,
        spec: TaskSpec,
        file: str,
        data: bytes,
        batch_id: str,
        report: ValidationReport,
        batch: Validated,
        blobs: dict[str, bytes] | None = None,
    ) -> IngestResult:
        self.image_refs.store_accepted(spec.name, blobs or {})
        ref = self.batch_store.write(spec, file, data, batch_id, report, batch.splits, batch.keys)
        if ref is None:  # accepted concurrently by another ingester
            return self._duplicate(key, spec.name, file, data, batch_id)
        self.landing.remove(key)
        self.landing.remove_taken_images(spec, key, data, batch.images)
        batch_dir = layout.batch_prefix(spec.name, batch_id)
        return IngestResult(
            status="accepted",
            key=key,
            task=spec.name,
            file=file,
            batch_id=batch_id,
            location=batch_dir,
            batch=ref,
            report=report,
            message=f"{file}: accepted as batch {batch_id} of task {spec.name!r} ({ref.train_rows} train, "
            f"{ref.eval_rows} eval) in {batch_dir}",
        )

    def _duplicate(self, key: str, task: str, file: str, data: bytes, batch_id: str) -> IngestResult:
        manifest = self.batch_store.manifest(task, batch_id)
        if manifest.source_sha256 != _sha256(data):
            raise IntakeError(
                f"{key}: batch id {batch_id} is taken by different bytes (a sha256 prefix clash); "
                "the file was left in the landing zone"
            )
        self.landing.remove(key)
        location = layout.batch_prefix(task, batch_id)
        return IngestResult(
            status="duplicate",
            key=key,
            task=task,
            file=file,
            batch_id=batch_id,
            location=location,
            batch=manifest.batch,
            message=f"{file}: same bytes as batch {batch_id} ({manifest.source}) already accepted in {location}; "
            f"nothing new to train, removed from the landing zone",
        )

    # --- accepted batches (BatchStore, ImageRefs) ---------------------------------------------------------------------

    def batches(self, task: str) -> list[BatchRef]:
        """The accepted batches of a task, oldest first."""
        return self.batch_store.batches(task)

    def load_split(self, batch: BatchRef, split: Side) -> list[Example]:
        """The examples of one side of a batch, after checking them against the checksums in batch.json."""
        return self.batch_store.load_split(batch, split)

    def load_image(self, task: str, ref: str) -> bytes:
        """The bytes of an accepted image (a content reference from a split), checked against their sha256."""
        return self.image_refs.load(task, ref)

    def eval_set(self, task: str) -> list[Example]:
        """Every held-out example of a task: the union of the eval splits of its batches."""
        return self.batch_store.eval_set(task)

    def accept_examples(self, task: str, examples: Iterable[Example], source_name: str) -> BatchRef:
        """Serialise ``examples`` to JSONL and take them through the landing zone like any submitted file.

        Returns the new batch (or the existing one, for examples already accepted); raises :class:`BatchRejected`
        with the report's problems when they fail validation (the file is then in quarantine).
        """
        self.task_spec(task)
        file = safe_file_name(source_name)
        try:
            if file_format(file) != "jsonl":
                file = os.path.splitext(file)[0] + ".jsonl"
        except UnsupportedFormat:
            file = file + ".jsonl"
        result = self.ingest_key(self.landing.land(task, safe_file_name(file), jsonl(examples)))
        if result.status == "quarantined":
            assert result.report is not None
            raise BatchRejected(result.message, result.report, result.location)
        assert result.batch is not None
        return result.batch


__all__ = [
    "BatchCorrupted",
    "BatchManifest",
    "BatchRejected",
    "BatchStore",
    "ImageRefs",
    "IngestResult",
    "Intake",
    "IntakeError",
    "LandingZone",
    "Quarantine",
    "ReportSummary",
    "TaskSpecConflict",
    "UnknownTask",
    "safe_file_name",
]
