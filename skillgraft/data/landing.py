"""The landing zone (``incoming/<task>/``) and the quarantine: where files wait to be ingested, and where the rejected
ones go.

Files land by ``skillgraft submit`` (:meth:`LandingZone.land`, images first: :meth:`LandingZone.land_images`) or by
any tool writing into the store; which landed keys are data files waiting to be ingested is
:func:`skillgraft.layout.is_waiting_data_file` (the watcher announces the same ones). An image waits beside the data
files that reference it and leaves with the last of them. A rejected file moves to its quarantine folder with
``report.json`` and ``report.html``; a landed entry that is not a plain file is never read
(:meth:`Quarantine.refuse_unsafe`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from skillgraft import layout
from skillgraft.data import images
from skillgraft.data.errors import IntakeError, UnknownTask
from skillgraft.data.image_refs import ImageRefs
from skillgraft.data.io import DataError, ImageError, iter_records
from skillgraft.data.objects import put_same, remove_object
from skillgraft.data.spec import TaskSpec
from skillgraft.data.validate import ValidationReport, rejection_report
from skillgraft.names import InvalidName, check_name
from skillgraft.refs import BatchRef
from skillgraft.store.base import KeyExists, KeyNotFound, ObjectStore, UnsafeFile

safe_file_name = layout.safe_file_name


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


def quarantined(key: str, task: str, file: str, batch_id: str, location: str, report, message: str) -> IngestResult:
    return IngestResult(status="quarantined", key=key, task=task, file=file, batch_id=batch_id, location=location,
                        report=report, message=message)  # fmt: skip


class LandingZone:
    """The landing zone of every task on one object store. Cheap to construct; holds no cache."""

    def __init__(self, store: ObjectStore, image_refs: ImageRefs, task_spec: Callable[[str], TaskSpec]) -> None:
        self.store = store
        self.image_refs = image_refs
        self._task_spec = task_spec

    # --- landing ------------------------------------------------------------------------------------------------------

    def land(self, task: str, file: str, data: bytes) -> str:
        """Land ``data`` as ``incoming/<task>/<file>`` (or ``<stem>-<batch id>.<ext>`` when that name holds other
        bytes); the same bytes already there: nothing is written. Returns the key."""
        for name in (file, layout.suffixed_file_name(file, data)):
            key = layout.landed_key(task, name)
            if put_same(self.store, key, data, clash_ok=True):
                return key
        raise IntakeError(f"cannot land {file!r} for task {task!r}: {key} holds different bytes")  # sha256 clash

    def land_images(self, spec: TaskSpec, path: Path, data: bytes) -> None:
        """Copy the images ``path`` references (relative to its folder) to ``incoming/<task>/<path>``, before the
        data file lands; every image is checked first (the intake's own checks), so a missing or broken one stops the
        submission whole."""
        file = safe_file_name(path.name)
        try:  # only the rows with an image are kept: a data file of a million rows is read chunk by chunk
            records = [r for chunk in iter_records(data, file, answer_type=spec.answer_type)
                       for r in chunk if r.example.image is not None]  # fmt: skip
        except DataError:
            return  # unreadable: the file lands as it is and the intake quarantines it with the reasons
        if not records:
            return
        folder = path.parent.resolve()
        try:  # checked one by one, not kept: read again below to upload, never all in memory at once
            self.image_refs.resolve(spec.name, file, records, self.image_refs.local_reader(spec.name, folder), None)
        except ImageError as e:
            problems = [f"{path}{err.location[len(file) :]}: field 'image': {err.message}" for err in e.all_errors()]
            more = f" (and {e.issue_count - 5} more)" if e.issue_count > 5 else ""
            raise IntakeError("; ".join(problems[:5]) + more + "; nothing was submitted") from None
        for ref in dict.fromkeys(r.example.image for r in records if r.example.image is not None):
            local = folder / ref
            if not local.is_file():
                continue  # a content reference the task already holds
            key = layout.landed_key(spec.name, ref)
            if not put_same(self.store, key, local.read_bytes(), clash_ok=True):
                raise IntakeError(
                    f"{key} already holds a different image, waiting for another data file; nothing was submitted: "
                    "give this image another path, or ingest the waiting file first"
                )

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
                spec = self._task_spec(t)
            except (UnknownTask, InvalidName):
                continue
            wanted = self.waiting_refs(spec)
            prefix = layout.landing_prefix(t)
            out += [k for k in self.landed_images(t) if k[len(prefix) :] not in wanted]
        return out

    # --- leaving ------------------------------------------------------------------------------------------------------

    def remove(self, key: str) -> None:
        """Take ``key`` out of the landing zone (already gone: another ingester moved it first)."""
        remove_object(self.store, key)

    def remove_taken_images(self, spec: TaskSpec, key: str, data: bytes, refs: Iterable[str] | None = None) -> None:
        """Remove the landed images the accepted file ``key`` referenced, except those another waiting data file of
        the task references too (they stay for it). ``refs``: those references, when the caller read them already
        (else ``data`` is read for them)."""
        taken = set(self.refs(spec, key, data) if refs is None else refs)
        if taken:  # text-only files take nothing: don't read the waiting files for them
            taken -= self.waiting_refs(spec)
        for ref in sorted(taken):
            self.remove(layout.landed_key(spec.name, ref))

    def waiting_refs(self, spec: TaskSpec) -> set[str]:
        """The image references of the data files still waiting in the task's landing folder."""
        wanted: set[str] = set()
        for key in self.incoming(spec.name):
            try:
                wanted.update(self.refs(spec, key, self.store.get(key)))
            except (KeyNotFound, UnsafeFile):  # ingested meanwhile; a link is refused by ingest, names no image
                continue
        return wanted

    @staticmethod
    def refs(spec: TaskSpec, key: str, data: bytes) -> list[str]:
        """The image references a landed data file makes (for one it can't read: image names in its bytes)."""
        try:
            chunks = iter_records(data, safe_file_name(key.rsplit("/", 1)[-1]), answer_type=spec.answer_type)
            return [r.example.image for chunk in chunks for r in chunk if r.example.image]
        except DataError:  # unreadable: it can't take an image either, except by a name that appears in its bytes
            return [
                ref.decode()
                for ref in set(re.findall(rb"[A-Za-z0-9_./-]+", data))
                if images.is_image_name(ref.decode())
            ]


class Quarantine:
    """Rejected landed files, with their validation reports. Cheap to construct; holds no cache."""

    def __init__(self, store: ObjectStore, landing: LandingZone) -> None:
        self.store = store
        self.landing = landing

    def put(self, key: str, task: str | None, file: str, data: bytes, report: ValidationReport) -> IngestResult:
        """Move a rejected file to the quarantine folder of ``task`` (None: not in a valid task folder)."""
        batch_id = report.batch_id
        location = layout.quarantine_prefix(task, batch_id)
        put_same(self.store, location + file, data, verify=True)
        self.write_report(location, report)
        self.landing.remove(key)
        message = f"{report.headline()}; batch {batch_id} moved to {location}, nothing deleted"
        return quarantined(key, task or layout.INVALID_TASK_DIR, file, batch_id, location, report, message)

    def refuse_unsafe(self, key: str, err: UnsafeFile) -> IngestResult:
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
        self.write_report(location, report)
        if err.at == key:
            self.landing.remove(key)
            fate = "the link was removed from the landing zone (what it points to was not touched)"
            if "link" not in err.what:
                fate = f"the {err.what.removeprefix('a ')} was removed from the landing zone"
        else:
            fate = f"it was left in place: remove {err.at} by hand"
        return quarantined(key, task or layout.INVALID_TASK_DIR, file, batch_id, location, report,
                           f"{message}; nothing was copied, {fate}; report in {location}")  # fmt: skip

    def write_report(self, location: str, report: ValidationReport) -> None:
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
            html = report.to_html().encode("utf-8")
            put_same(self.store, location + layout.report_file("html", n), html, clash_ok=True)
            return
