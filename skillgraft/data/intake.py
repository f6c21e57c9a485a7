"""The landing zone, the accepted batches and the quarantine of every task, on any :class:`ObjectStore`.

Keys: see :mod:`skillgraft.layout` (``tasks/<task>/...``, the landing zone ``incoming/<task>/``, ``quarantine/``).

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
import json
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from skillgraft import layout
from skillgraft.data import images
from skillgraft.data.io import MAX_ISSUES, DataError, ImageError, Record, UnsupportedFormat, file_format, read_records
from skillgraft.data.spec import Example, TaskSpec
from skillgraft.data.split import Side, assign_sides, example_key
from skillgraft.data.validate import (
    KEY_HEX,
    ValidationReport,
    parse_failure_report,
    rejection_report,
    validate_records,
)
from skillgraft.names import InvalidName, check_name
from skillgraft.refs import BatchRef, FileEntry
from skillgraft.store.base import KeyExists, KeyNotFound, ObjectStore, UnsafeFile

safe_file_name = layout.safe_file_name


class IntakeError(Exception):
    """A problem with task data the user can act on; the message says what happened to the data."""


class UnknownTask(IntakeError):
    pass


class TaskSpecConflict(IntakeError):
    pass


class BatchCorrupted(IntakeError):
    pass


class BatchRejected(IntakeError):
    """A batch failed validation; ``report`` says why, ``location`` is its quarantine folder."""

    def __init__(self, message: str, report: ValidationReport, location: str) -> None:
        super().__init__(message)
        self.report = report
        self.location = location


class ReportSummary(BaseModel):
    success: bool
    rows: int
    rules_checked: list[str]
    issue_count: int


class BatchManifest(BaseModel):
    """``batch.json``: written last; a batch folder without it is not a batch."""

    format: Literal[1] = 1
    batch: BatchRef
    source: str = Field(description="the submitted file, stored under source/")
    source_sha256: str
    spec_sha256: str = Field(description="sha256 of the task.json the batch was validated against")
    files: dict[str, FileEntry] = Field(description="sha256 and size of every file of the batch, by relative path")
    report: ReportSummary
    created_at: str = Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds"),
        description="UTC, microseconds: orders batches accepted within the same second",
    )


class IngestResult(BaseModel):
    """What happened to one landed file."""

    status: Literal["accepted", "duplicate", "quarantined"]
    key: str = Field(description="the landing-zone key the file was taken from")
    task: str
    file: str
    batch_id: str
    location: str = Field(description="the batch folder (accepted, duplicate) or quarantine folder")
    batch: BatchRef | None = None
    report: ValidationReport | None = None
    message: str

    @property
    def accepted(self) -> bool:
        return self.status != "quarantined"


def _quarantined(key: str, task: str, file: str, batch_id: str, location: str, report, message: str) -> IngestResult:
    return IngestResult(status="quarantined", key=key, task=task, file=file, batch_id=batch_id, location=location,
                        report=report, message=message)  # fmt: skip


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonl(examples: Iterable[Example]) -> bytes:
    return "".join(json.dumps(ex.model_dump(exclude_none=True), ensure_ascii=False) + "\n" for ex in examples).encode(
        "utf-8"
    )


class Intake:
    """Task registration, the landing zone and the accepted batches, on one object store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # --- tasks ----------------------------------------------------------------------------------------------------

    def register_task(self, spec: TaskSpec) -> TaskSpec:
        """Write ``tasks/<name>/task.json`` once; registering the same spec again is a no-op, a different one raises."""
        key = layout.task_spec_key(spec.name)
        try:
            self.store.put_new(key, spec.model_dump_json(indent=2).encode("utf-8"))
            return spec
        except KeyExists:
            existing = self.task_spec(spec.name)
        if existing != spec:
            old, new = existing.model_dump(), spec.model_dump()
            changes = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in old if old[k] != new[k])
            raise TaskSpecConflict(
                f"task {spec.name!r} is already registered with a different spec ({changes}); task specs are "
                f"written once so every batch is validated and split the same way: register a new task name instead"
            )
        return existing

    def task_spec(self, name: str) -> TaskSpec:
        check_name("task", name)
        try:
            return TaskSpec.model_validate_json(self.store.get(layout.task_spec_key(name)))
        except KeyNotFound:
            raise UnknownTask(
                f"task {name!r} is not registered (no {layout.task_spec_key(name)} in {self.store.url}): register it "
                f"with a task spec first; known tasks: {self.tasks() or 'none'}"
            ) from None

    def tasks(self) -> list[str]:
        return [t for t in map(layout.task_of_spec_key, self.store.keys(layout.TASKS_PREFIX)) if t is not None]

    # --- the landing zone -----------------------------------------------------------------------------------------

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
        self._land_images(spec, path, data)  # first: a watcher that sees the data file finds its images there
        return self._land(task, safe_file_name(path.name), data)

    def _land_images(self, spec: TaskSpec, path: Path, data: bytes) -> None:
        """Copy the images ``path`` references (relative to its folder) to ``incoming/<task>/<path>``, before the
        data file lands; every image is checked first (the intake's own checks), so a missing or broken one stops the
        submission whole."""
        file = safe_file_name(path.name)
        try:
            records = read_records(data, file, answer_type=spec.answer_type)
        except DataError:
            return  # unreadable: the file lands as it is and the intake quarantines it with the reasons
        if not any(r.example.image is not None for r in records):
            return
        folder = path.parent.resolve()
        try:  # checked one by one, not kept: read again below to upload, never all in memory at once
            self._resolve_images(spec.name, file, records, self._local_image_reader(spec.name, folder), None)
        except ImageError as e:
            problems = [f"{path}{err.location[len(file):]}: field 'image': {err.message}" for err in e.all_errors()]
            more = f" (and {e.issue_count - 5} more)" if e.issue_count > 5 else ""
            raise IntakeError("; ".join(problems[:5]) + more + "; nothing was submitted") from None
        for ref in dict.fromkeys(r.example.image for r in records if r.example.image is not None):
            local = folder / ref
            if not local.is_file():
                continue  # a content reference the task already holds
            key = layout.landed_key(spec.name, ref)
            if not self._put_same(key, local.read_bytes(), clash_ok=True):
                raise IntakeError(
                    f"{key} already holds a different image, waiting for another data file; nothing was submitted: "
                    "give this image another path, or ingest the waiting file first"
                )

    def _land(self, task: str, file: str, data: bytes) -> str:
        for name in (file, layout.suffixed_file_name(file, data)):
            key = layout.landed_key(task, name)
            if self._put_same(key, data, clash_ok=True):
                return key
        raise IntakeError(f"cannot land {file!r} for task {task!r}: {key} holds different bytes")  # sha256 clash

    def incoming(self, task: str | None = None) -> list[str]:
        """Keys waiting in the landing zone (of one task, or all)."""
        return [k for k in self.store.keys(layout.landing_prefix(task)) if layout.is_waiting_data_file(k)]

    def landed_images(self, task: str) -> list[str]:
        """Image keys waiting in ``incoming/<task>/`` (taken by the data files that reference them)."""
        return [k for k in self.store.keys(layout.landing_prefix(task)) if layout.is_landed_image(k)]

    def orphaned_images(self, task: str | None = None) -> list[str]:
        """Landed images that no waiting data file of their task references (left by a quarantined file, or landed
        without their data file yet). Nothing removes them but you: they may be waiting for a corrected file."""
        tasks = [check_name("task", task)] if task is not None else sorted(
            {layout.landing_folder(k) for k in self.store.keys(layout.landing_prefix()) if layout.is_landed_image(k)})  # fmt: skip
        out: list[str] = []
        for t in tasks:
            try:
                spec = self.task_spec(t)
            except (UnknownTask, InvalidName):
                continue
            wanted = self._waiting_refs(spec)
            prefix = layout.landing_prefix(t)
            out += [k for k in self.landed_images(t) if k[len(prefix) :] not in wanted]
        return out

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
            return self._refuse_unsafe(key, e)
        batch_id = layout.batch_id(data)
        if len(parts) == 2:
            file = safe_file_name(parts[1])
            message = f"file is not inside a task folder: put it under {layout.INCOMING_PREFIX}<task>/"
            report = rejection_report("task_name", message, file=file, batch_id=batch_id)
            return self._quarantine(key, None, file, data, report)
        task, file = parts[1], safe_file_name("_".join(parts[2:]))
        try:
            check_name("task", task)
        except InvalidName as e:
            report = rejection_report("task_name", str(e), file=file, batch_id=batch_id)
            return self._quarantine(key, None, file, data, report)
        try:
            spec = self.task_spec(task)
        except UnknownTask as e:
            report = rejection_report("unknown_task", str(e), file=file, batch_id=batch_id, task=task)
            return self._quarantine(key, task, file, data, report)

        if self.store.exists(layout.batch_manifest_key(task, batch_id)):
            return self._duplicate(key, task, file, data, batch_id)

        blobs: dict[str, bytes] = {}
        report, records, sides = self._validate(spec, file, data, batch_id, self._landing_image_reader(task), blobs)
        if not report.success:
            return self._quarantine(key, task, file, data, report)
        return self._accept(key, spec, file, data, batch_id, report, [r.example for r in records], sides, blobs)

    def check(self, task: str, path: str | os.PathLike[str], spec: TaskSpec | None = None) -> ValidationReport:
        """Run the intake's checks on a local file without submitting it (nothing is written to the store); its
        images are read relative to its folder. ``spec``: check against this spec (not registered) instead of the
        registered one — for a task that is not registered yet."""
        path = Path(path)
        data = path.read_bytes()
        reader = self._local_image_reader(task, path.parent.resolve())
        spec = spec if spec is not None else self.task_spec(task)
        report, _, _ = self._validate(spec, safe_file_name(path.name), data, layout.batch_id(data), reader)
        return report

    def _local_image_reader(self, task: str, folder: Path):
        """Image bytes for a reference in a local data file: the file it names inside ``folder``, else (a content
        reference) an image the task already holds; None when neither exists."""
        stored = self._landing_image_reader(task)

        def read(ref: str) -> bytes | None:
            target = (folder / ref).resolve()
            if target.is_relative_to(folder) and target.is_file():
                return target.read_bytes()
            return stored(ref) if images.is_content_ref(ref) else None

        return read

    def _landing_image_reader(self, task: str):
        """Image bytes for a reference in a landed file: a content reference the task already holds, else
        ``incoming/<task>/<ref>``; None when neither exists."""

        def read(ref: str) -> bytes | None:
            keys = [layout.task_image_key(task, ref)] if images.is_content_ref(ref) else []
            for key in [*keys, layout.landed_key(task, ref)]:
                try:
                    return self.store.get(key)
                except KeyNotFound:
                    continue
                except UnsafeFile as e:
                    where = "it is" if e.at == key else f"{e.at} on its path is"
                    raise images.ImageProblem(
                        f"image {ref!r} is refused: {where} {e.what} in the store, never followed or read; put the "
                        "image file itself there"
                    ) from None
            return None

        return read

    def _resolve_images(
        self, task: str, file: str, records: list[Record], read, blobs: dict[str, bytes] | None
    ) -> list[Record]:
        """Records with every image reference replaced by its content reference; the images' bytes go to ``blobs``
        (None: checked, not kept). Raises :class:`ImageError` listing every missing, unsafe or broken image (file,
        line, field)."""
        errors: list[DataError] = []
        by_ref: dict[str, str] = {}  # reference -> content reference
        bad: dict[str, tuple[str, str]] = {}  # reference -> (where first seen, problem)
        out = []
        for rec in records:
            ref = rec.example.image
            if ref is None:
                out.append(rec)
                continue
            if ref not in by_ref and ref not in bad:
                try:
                    images.check_ref(ref)
                    body = read(ref)
                    if body is None:
                        raise images.ImageProblem(
                            f"image {ref!r} not found: it must sit beside the data file (in "
                            f"{layout.landing_prefix(task)} of the store, or in the data file's folder for `skillgraft submit`)"
                        )
                    suffix = images.inspect(body, ref)
                    content = images.content_ref(body, suffix)
                    if images.is_content_ref(ref) and images.content_hash(ref) != images.content_hash(content):
                        raise images.ImageProblem(f"image {ref!r} does not match its own sha256 (it was modified)")
                    by_ref[ref] = content
                    if blobs is not None:
                        blobs[content] = body
                except images.ImageProblem as e:
                    bad[ref] = (rec.location(file), str(e))
                    errors.append(ImageError(file, str(e), line=rec.line, field="image", unit=rec.unit))
                    continue
            if ref in bad:
                where, problem = bad[ref]
                errors.append(ImageError(file, f"{problem} (as at {where})", line=rec.line, field="image", unit=rec.unit))
            else:
                out.append(rec._replace(example=rec.example.model_copy(update={"image": by_ref[ref]})))
        if errors:
            first = errors[0]
            first.more = errors[1:MAX_ISSUES]
            first.uncounted = max(0, len(errors) - MAX_ISSUES)
            raise first
        return out

    def _validate(
        self, spec: TaskSpec, file: str, data: bytes, batch_id: str, read_image=None, blobs: dict[str, bytes] | None = None
    ) -> tuple[ValidationReport, list[Record], list[Side]]:
        seen_eval, seen_train = self._leak_keys(spec)  # store errors propagate: the file stays landed
        try:
            records = read_records(data, file, answer_type=spec.answer_type)
            if any(r.example.image is not None for r in records):
                try:
                    records = self._resolve_images(spec.name, file, records,
                                                   read_image or self._landing_image_reader(spec.name), blobs)  # fmt: skip
                except ImageError as e:
                    report = parse_failure_report(e, batch_id=batch_id, task=spec.name)
                    return report.model_copy(update={"rows": len(records)}), [], []
            sides = (["eval"] * len(records) if spec.role == "guard"  # a guard is held out whole
                     else assign_sides([r.example for r in records], spec.eval_fraction))  # fmt: skip
            report = validate_records(
                records, sides, spec, file=file, batch_id=batch_id, existing_eval=seen_eval, existing_train=seen_train
            )
        except DataError as e:
            return parse_failure_report(e, batch_id=batch_id, task=spec.name), [], []
        except Exception as e:  # noqa: BLE001 - a reader/validator bug must not leave the file landed forever
            message = (
                f"validation itself failed ({type(e).__name__}: {e}); this is a bug in skillgraft, please "
                "report it with this file"
            )
            return rejection_report("internal_error", message, file=file, batch_id=batch_id, task=spec.name), [], []
        return report, records, sides

    def _leak_keys(self, spec: TaskSpec) -> tuple[dict[str, str], dict[str, str]]:
        """What a new batch of ``spec`` must not repeat: (prompts held out for evaluation, prompts trained on).

        A task's batch: its own earlier eval prompts, and every guard's prompts (a training row that repeats a guard
        prompt would teach the model the answers it is checked on). A guard's batch: its own earlier prompts, and
        every task's training prompts (a guard must not hold what was already trained on).
        """
        own_eval, own_train = self._seen_keys(spec.name)
        others = [t for t in self.tasks() if t != spec.name]
        roles = {t: self.task_spec(t).role for t in others}
        if spec.role == "guard":
            trained = dict(own_train)
            for t in (t for t in others if roles[t] == "task"):
                for key, batch in self._seen_keys(t)[1].items():
                    trained.setdefault(key, f"{batch} of task {t!r}")
            return own_eval, trained
        held = dict(own_eval)
        for g in (t for t in others if roles[t] == "guard"):
            for key, batch in self._seen_keys(g)[0].items():
                held.setdefault(key, f"{batch} of guard {g!r}")
        return held, own_train

    def guards(self) -> list[str]:
        """Registered guard sets (task specs with ``role: guard``)."""
        return [t for t in self.tasks() if self.task_spec(t).role == "guard"]

    def _seen_keys(self, task: str) -> tuple[dict[str, str], dict[str, str]]:
        """Keys of every example in the task's accepted eval / train splits -> the batch holding it."""
        seen: dict[str, dict[str, str]] = {"eval": {}, "train": {}}
        for batch in self.batches(task):
            for split in ("eval", "train"):
                for ex in self.load_split(batch, split):  # type: ignore[arg-type]
                    seen[split].setdefault(example_key(ex)[:KEY_HEX], batch.batch_id)
        return seen["eval"], seen["train"]

    def _accept(
        self,
        key: str,
        spec: TaskSpec,
        file: str,
        data: bytes,
        batch_id: str,
        report: ValidationReport,
        examples: list[Example],
        sides: list[Side],
        blobs: dict[str, bytes] | None = None,
    ) -> IngestResult:
        batch_dir = layout.batch_prefix(spec.name, batch_id)
        for ref, body in (blobs or {}).items():  # content-addressed: an image already stored is the same bytes
            self._put_same(layout.task_image_key(spec.name, ref), body, verify=True)
        files = {
            layout.split_file("train"): _jsonl(ex for ex, s in zip(examples, sides) if s == "train"),
            layout.split_file("eval"): _jsonl(ex for ex, s in zip(examples, sides) if s == "eval"),
            layout.source_file(file): data,
            layout.report_file("json"): report.model_dump_json(indent=2).encode("utf-8"),
        }
        for name, body in files.items():
            self._put_same(batch_dir + name, body, verify=True)
        ref = BatchRef(task=spec.name, batch_id=batch_id, train_rows=report.train_rows, eval_rows=report.eval_rows)
        manifest = BatchManifest(
            batch=ref,
            source=file,
            source_sha256=_sha256(data),
            spec_sha256=_sha256(self.store.get(layout.task_spec_key(spec.name))),
            files={n: FileEntry(sha256=_sha256(b), size=len(b)) for n, b in files.items()},
            report=ReportSummary(
                success=True,
                rows=report.rows,
                rules_checked=sorted({r.rule for r in report.results}),
                issue_count=report.issue_count,
            ),
        )
        try:
            body = manifest.model_dump_json(indent=2).encode("utf-8")
            self.store.put_new(layout.batch_manifest_key(spec.name, batch_id), body)
        except KeyExists:  # accepted concurrently by another ingester
            return self._duplicate(key, spec.name, file, data, batch_id)
        self._remove_landed(key)
        self._remove_taken_images(spec, key, data)
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
        manifest = self._manifest(task, batch_id)
        if manifest.source_sha256 != _sha256(data):
            raise IntakeError(
                f"{key}: batch id {batch_id} is taken by different bytes (a sha256 prefix clash); "
                "the file was left in the landing zone"
            )
        self._remove_landed(key)
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

    def _quarantine(self, key: str, task: str | None, file: str, data: bytes, report: ValidationReport) -> IngestResult:
        """Move a rejected file to the quarantine folder of ``task`` (None: not in a valid task folder)."""
        batch_id = report.batch_id
        location = layout.quarantine_prefix(task, batch_id)
        self._put_same(location + file, data, verify=True)
        self._write_report(location, report)
        self._remove_landed(key)
        message = f"{report.headline()}; batch {batch_id} moved to {location}, nothing deleted"
        return _quarantined(key, task or layout.INVALID_TASK_DIR, file, batch_id, location, report, message)

    def _refuse_unsafe(self, key: str, err: UnsafeFile) -> IngestResult:
        """A landed entry that is not a plain file: a report in quarantine (no data: nothing was read), and the entry
        itself removed from the landing zone (a link is removed, never what it points to)."""
        task = layout.landing_task(key)
        file = safe_file_name(key.split("/")[-1])
        batch_id = layout.batch_id(f"unsafe-file:{key}".encode())  # nothing was read: the id names the entry
        location = layout.quarantine_prefix(task, batch_id)
        what = f"{key} is {err.what}" if err.at == key else f"{key} is reached through {err.at}, {err.what}"
        message = (
            f"{what}: links and special files in the landing zone are refused, never followed or read; put the file "
            f"itself in {layout.INCOMING_PREFIX}<task>/ (or use `skillgraft submit`)"
        )
        report = rejection_report("unsafe_file", message, file=file, batch_id=batch_id, task=task)
        self._write_report(location, report)
        if err.at == key:
            self._remove_landed(key)
            fate = "the link was removed from the landing zone (what it points to was not touched)"
            if "link" not in err.what:
                fate = f"the {err.what.removeprefix('a ')} was removed from the landing zone"
        else:
            fate = f"it was left in place: remove {err.at} by hand"
        return _quarantined(key, task or layout.INVALID_TASK_DIR, file, batch_id, location, report,
                            f"{message}; nothing was copied, {fate}; report in {location}")  # fmt: skip

    def _write_report(self, location: str, report: ValidationReport) -> None:
        """report.json (+ report.html) in a quarantine folder; a different report for the same bytes (the task was
        registered since, say) is kept beside the first as report.2.json, never over it."""
        body = report.model_dump_json(indent=2).encode("utf-8")
        n = 1
        while True:
            try:
                self.store.put_new(location + layout.report_file("json", n), body)
            except KeyExists:
                if self.store.get(location + layout.report_file("json", n)) == body:
                    return
                n += 1
                continue
            self._put_same(location + layout.report_file("html", n), report.to_html().encode("utf-8"), clash_ok=True)
            return

    def _put_same(self, key: str, data: bytes, *, verify: bool = False, clash_ok: bool = False) -> bool:
        """Write ``data`` once. True if the key now holds exactly ``data`` (it already did: fine too); False if it
        holds other bytes and ``clash_ok``, else raise. ``verify`` reads a fresh write back and compares."""
        try:
            self.store.put_new(key, data)
        except KeyExists:
            try:
                same = self.store.get(key) == data
            except KeyNotFound:  # removed in between (ingested): write again
                return self._put_same(key, data, verify=verify, clash_ok=clash_ok)
            if same or clash_ok:
                return same
            raise IntakeError(f"{key} already exists with different content; objects are never overwritten") from None
        if verify and self.store.get(key) != data:
            raise IntakeError(f"{key}: bytes read back differ from the bytes written; the landed file was kept")
        return True

    def _remove_taken_images(self, spec: TaskSpec, key: str, data: bytes) -> None:
        """Remove the landed images the accepted file ``key`` referenced, except those another waiting data file of
        the task references too (they stay for it)."""
        taken = set(self._refs(spec, key, data))
        if taken:  # text-only files take nothing: don't read the waiting files for them
            taken -= self._waiting_refs(spec)
        for ref in sorted(taken):
            self._remove_landed(layout.landed_key(spec.name, ref))

    def _waiting_refs(self, spec: TaskSpec) -> set[str]:
        """The image references of the data files still waiting in the task's landing folder."""
        wanted: set[str] = set()
        for key in self.incoming(spec.name):
            try:
                wanted.update(self._refs(spec, key, self.store.get(key)))
            except (KeyNotFound, UnsafeFile):  # ingested meanwhile; a link is refused by ingest, names no image
                continue
        return wanted

    @staticmethod
    def _refs(spec: TaskSpec, key: str, data: bytes) -> list[str]:
        try:
            return [r.example.image for r in read_records(data, safe_file_name(key.rsplit("/", 1)[-1]),
                                                          answer_type=spec.answer_type) if r.example.image]  # fmt: skip
        except DataError:  # unreadable: it can't take an image either, except by a name that appears in its bytes
            return [ref.decode() for ref in set(re.findall(rb"[A-Za-z0-9_./-]+", data)) if images.is_image_name(ref.decode())]

    def _remove_landed(self, key: str) -> None:
        try:
            self.store.delete(key)
        except KeyNotFound:  # another ingester moved it first
            pass

    # --- accepted batches -----------------------------------------------------------------------------------------

    def _manifest(self, task: str, batch_id: str) -> BatchManifest:
        return BatchManifest.model_validate_json(self.store.get(layout.batch_manifest_key(task, batch_id)))

    def batches(self, task: str) -> list[BatchRef]:
        """The accepted batches of a task, oldest first."""
        check_name("task", task)
        manifests = [
            BatchManifest.model_validate_json(self.store.get(k))
            for k in self.store.keys(layout.batches_prefix(task))
            if layout.is_batch_manifest_key(task, k)
        ]
        return [m.batch for m in sorted(manifests, key=lambda m: (m.created_at, m.batch.batch_id))]

    def load_split(self, batch: BatchRef, split: Side) -> list[Example]:
        """The examples of one side of a batch, after checking them against the checksums in batch.json."""
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        check_name("task", batch.task)
        manifest = self._manifest(batch.task, batch.batch_id)
        name = layout.split_file(split)
        key = layout.split_key(batch.task, batch.batch_id, split)
        data = self.store.get(key)
        entry = manifest.files[name]
        if len(data) != entry.size or _sha256(data) != entry.sha256:
            raise BatchCorrupted(
                f"{key} does not match its checksum in {layout.BATCH_MANIFEST} (sha256 {_sha256(data)[:12]}..., "
                f"expected {entry.sha256[:12]}...): the stored batch was modified; restore it or re-submit the source file"
            )
        return [Example.model_validate_json(line) for line in data.decode("utf-8").splitlines() if line]

    def load_image(self, task: str, ref: str) -> bytes:
        """The bytes of an accepted image (a content reference from a split), checked against their sha256."""
        check_name("task", task)
        images.content_hash(ref)  # only content references are read from the store: nothing else becomes a key
        key = layout.task_image_key(task, ref)
        data = self.store.get(key)
        if _sha256(data) != images.content_hash(ref):
            raise BatchCorrupted(
                f"{key} does not match the sha256 in its name (got {_sha256(data)[:12]}...): the stored image was "
                "modified; restore it or re-submit the batch that brought it"
            )
        return data

    def eval_set(self, task: str) -> list[Example]:
        """Every held-out example of a task: the union of the eval splits of its batches."""
        return [ex for batch in self.batches(task) for ex in self.load_split(batch, "eval")]

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
        result = self.ingest_key(self._land(task, safe_file_name(file), _jsonl(examples)))
        if result.status == "quarantined":
            assert result.report is not None
            raise BatchRejected(result.message, result.report, result.location)
        assert result.batch is not None
        return result.batch
