"""The batch store: task specs (``tasks/<task>/task.json``) and the accepted, immutable batches of every task.

A batch is written file by file (splits, source bytes, report; each write-once and read back) and exists only once its
``batch.json`` is written, last; a half-written batch folder is completed by the next ingest of the same bytes. Every
split read is checked against the checksums in ``batch.json``. Keys: :mod:`skillgraft.layout`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from skillgraft import layout
from skillgraft.data.errors import BatchCorrupted, TaskSpecConflict, UnknownTask
from skillgraft.data.keyindex import KEY_HEX, KeyIndex, key_file_bytes, key_values, read_key_file
from skillgraft.data.objects import put_same
from skillgraft.data.spec import Example, TaskSpec
from skillgraft.data.split import Side, example_key
from skillgraft.data.validate import ValidationReport
from skillgraft.names import check_name
from skillgraft.refs import BatchRef, FileEntry
from skillgraft.store.base import KeyExists, KeyNotFound, ObjectStore


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jsonl(examples: Iterable[Example]) -> bytes:
    return "".join(json.dumps(ex.model_dump(exclude_none=True), ensure_ascii=False) + "\n" for ex in examples).encode(
        "utf-8"
    )


class BatchStore:
    """Task specs and accepted batches on one object store. Cheap to construct; holds no cache."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # --- tasks --------------------------------------------------------------------------------------------------------

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

    def guards(self) -> list[str]:
        """Registered guard sets (task specs with ``role: guard``)."""
        return [t for t in self.tasks() if self.task_spec(t).role == "guard"]

    # --- batches ------------------------------------------------------------------------------------------------------

    def has_batch(self, task: str, batch_id: str) -> bool:
        """Is ``batch_id`` an accepted batch of ``task`` (its ``batch.json`` written)?"""
        return self.store.exists(layout.batch_manifest_key(task, batch_id))

    def manifest(self, task: str, batch_id: str) -> BatchManifest:
        """The ``batch.json`` of an accepted batch (``KeyNotFound`` when there is none)."""
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
        data = self._read_checked(batch, layout.split_file(split))
        return [Example.model_validate_json(line) for line in data.decode("utf-8").splitlines() if line]

    def eval_set(self, task: str) -> list[Example]:
        """Every held-out example of a task: the union of the eval splits of its batches."""
        return [ex for batch in self.batches(task) for ex in self.load_split(batch, "eval")]

    def split_keys(self, batch: BatchRef, split: Side) -> Any:
        """The keys (uint64) of one side of a batch: its stored key file, checked against ``batch.json``; a batch
        stored without one (by an earlier version) has its split read and hashed instead."""
        name = layout.key_file(split)
        manifest = self.manifest(batch.task, batch.batch_id)
        if name not in manifest.files:
            return key_values(example_key(ex)[:KEY_HEX] for ex in self.load_split(batch, split))
        data = self._read_checked(batch, name, manifest)
        try:
            return read_key_file(data, where=layout.batch_prefix(batch.task, batch.batch_id) + name)
        except ValueError as e:  # its checksum matched a batch.json that lists it wrongly
            raise BatchCorrupted(
                f"{e}: the stored batch was modified; restore it or re-submit the source file"
            ) from None

    def _read_checked(self, batch: BatchRef, name: str, manifest: BatchManifest | None = None) -> bytes:
        """A file of a batch, after checking it against its sha256 and size in ``batch.json`` (``manifest``: read
        already)."""
        entry = (manifest or self.manifest(batch.task, batch.batch_id)).files[name]
        key = layout.batch_prefix(batch.task, batch.batch_id) + name
        data = self.store.get(key)
        if len(data) != entry.size or _sha256(data) != entry.sha256:
            raise BatchCorrupted(
                f"{key} does not match its checksum in {layout.BATCH_MANIFEST} (sha256 {_sha256(data)[:12]}..., "
                f"expected {entry.sha256[:12]}...): the stored batch was modified; restore it or re-submit the source "
                "file"
            )
        return data

    def seen_keys(self, task: str) -> tuple[KeyIndex, KeyIndex]:
        """Keys of every example in the task's accepted eval / train splits -> the batch holding it."""
        batches = self.batches(task)
        return (
            KeyIndex([(self.split_keys(b, "eval"), b.batch_id) for b in batches]),
            KeyIndex([(self.split_keys(b, "train"), b.batch_id) for b in batches]),
        )

    def leak_keys(self, spec: TaskSpec) -> tuple[KeyIndex, KeyIndex]:
        """What a new batch of ``spec`` must not repeat: (prompts held out for evaluation, prompts trained on).

        A task's batch: its own earlier eval prompts, and every guard's prompts (a training row that repeats a guard
        prompt would teach the model the answers it is checked on). A guard's batch: its own earlier prompts, and
        every task's training prompts (a guard must not hold what was already trained on). Read from the batches' key
        files (8 bytes an example), not their splits.
        """
        own = self.batches(spec.name)
        own_eval = [(self.split_keys(b, "eval"), b.batch_id) for b in own]
        own_train = [(self.split_keys(b, "train"), b.batch_id) for b in own]
        others = [t for t in self.tasks() if t != spec.name]
        if spec.role == "guard":  # every task's training prompts
            return KeyIndex(own_eval), KeyIndex(own_train + self._keys_of_role(others, "task", "train"))
        return KeyIndex(own_eval + self._keys_of_role(others, "guard", "eval")), KeyIndex(own_train)

    def _keys_of_role(self, tasks: list[str], role: str, split: Side) -> list[tuple[Any, str]]:
        """The ``split`` keys of every batch of the ``tasks`` with ``role``, labelled ``<batch> of <role> '<task>'``."""
        return [
            (self.split_keys(b, split), f"{b.batch_id} of {role} {t!r}")
            for t in tasks
            if self.task_spec(t).role == role
            for b in self.batches(t)
        ]

    def write(
        self,
        spec: TaskSpec,
        file: str,
        data: bytes,
        batch_id: str,
        report: ValidationReport,
        splits: Mapping[Side, bytes],
        keys: Mapping[Side, Any],
    ) -> BatchRef | None:
        """Store an accepted batch: its splits (JSONL bytes) and their keys (uint64 arrays), the source bytes and the
        report (write-once, each read back), then ``batch.json`` last. None when another ingester wrote that
        ``batch.json`` first (the same bytes, accepted concurrently)."""
        batch_dir = layout.batch_prefix(spec.name, batch_id)
        files = {
            layout.split_file("train"): splits["train"],
            layout.split_file("eval"): splits["eval"],
            layout.key_file("train"): key_file_bytes(keys["train"]),
            layout.key_file("eval"): key_file_bytes(keys["eval"]),
            layout.source_file(file): data,
            layout.report_file("json"): report.model_dump_json(indent=2).encode("utf-8"),
        }
        for name, body in files.items():
            put_same(self.store, batch_dir + name, body, verify=True)
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
            return None
        return ref
