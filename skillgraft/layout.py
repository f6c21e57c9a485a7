"""The store layout: every object key skillgraft reads or writes, built in this module and nowhere else.

Pure functions over strings (no store access, no heavy imports), so every module that touches the store, the Prefect
tasks, the CLI and the tests agree on one layout. Keys are relative to the store root and the same on every backend::

    models/<model>/model.json                        written once: name, base (BaseRef), created_at, base files
    models/<model>/base/<file>                       optional base snapshot files, write-once
    models/<model>/versions/<v>/claim.json           written FIRST (put-if-absent): reserves the version id <v>
    models/<model>/versions/<v>/<file>               model files, write-once (delta.safetensors; a lora version also
                                                     adapter_config.json + adapter_model.safetensors)
    models/<model>/versions/<v>/manifest.json        written LAST, with sha256 + size of every model file
    models/<model>/versions/<v>/<attachment>         write-once reports added later (metrics.json, decision.json,
                                                     card.md)
    models/<model>/champion.json                     the champion pointer; moved only by a conditional write
    models/<model>/history.jsonl                     append-only log (append = read + conditional replace)
    models/<model>/guards.json                       the model's guard list (conditional writes)
    models/<model>/guards/<guard>/prompts-<sha16>.jsonl    a prompts-only guard's prompts, by content
    models/<model>/guards/<guard>/base-<sha16>.json        a guard's cached base score, per guard content

    tasks/<task>/task.json                           the TaskSpec, written once
    tasks/<task>/images/<sha256>.<ext>               accepted images, once each by content (see data/images.py)
    tasks/<task>/batches/<batch-id>/train.jsonl      an accepted batch, immutable; batch-id: :func:`batch_id`
                                   /eval.jsonl
                                   /source/<file>    the submitted bytes, unchanged
                                   /report.json      the validation report
                                   /batch.json       written last: BatchRef, checksums, report summary

    incoming/<task>/<file>                           the landing zone: data files wait here to be ingested
    incoming/<task>/<path>.png|.jpg|...              images the waiting data files reference (not data themselves)
    quarantine/<task>/<batch-id>/<file>              a rejected file, unchanged, with report.json and report.html
    quarantine/_invalid/<batch-id>/...               files whose task folder is not a valid task name (or missing)
    announced/<model>/<task>/<file>@<sha16>.json     which landed files were announced for a model (tasks/arrivals.py)

Names that become key segments are checked here (:func:`~skillgraft.names.check_name` for models, tasks, versions and
guards; :func:`is_file_name` for the files of a version or a base snapshot); a landed file's name is made safe by
:func:`safe_file_name`. Which landed keys the intake ingests, and the watcher announces: :func:`is_waiting_data_file`.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re

from skillgraft.names import check_name

# --- top-level folders and file names ----------------------------------------------------------------------------

MODELS = "models"
TASKS = "tasks"
INCOMING = "incoming"
QUARANTINE = "quarantine"
ANNOUNCED = "announced"
INVALID_TASK_DIR = "_invalid"
"""Quarantine folder for files whose task folder is not a valid task name (check_name never accepts it)."""

MODEL_INFO = "model.json"
CLAIM = "claim.json"
MANIFEST = "manifest.json"
DELTA = "delta.safetensors"
METRICS = "metrics.json"
DECISION = "decision.json"
CARD = "card.md"
CHAMPION = "champion.json"
HISTORY = "history.jsonl"
GUARDS = "guards.json"
ADAPTER_CONFIG = "adapter_config.json"
"""A lora version's PEFT adapter config (a model file of the version, beside the merged delta)."""
ADAPTER_WEIGHTS = "adapter_model.safetensors"
"""A lora version's PEFT adapter weights, safetensors (a model file of the version)."""
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
"""The names PEFT's ``save_pretrained`` writes and ``PeftModel.from_pretrained`` reads, in a version and an export."""

EXPORT_CARD = "README.md"
"""An exported directory's model card (YAML front matter the Hugging Face hub reads, then the lineage and scores)."""
EXPORT_PROVENANCE = "skillgraft.json"
"""An exported directory's provenance: the version, its chain and base, the lineage and every exported file's sha256."""

TASK_SPEC = "task.json"
BATCH_MANIFEST = "batch.json"
REPORT = "report"
"""Stem of a validation report: ``report.json`` / ``report.html`` (a batch's, or a quarantine folder's)."""
SOURCE_DIR = "source"

MODELS_PREFIX = f"{MODELS}/"
TASKS_PREFIX = f"{TASKS}/"
INCOMING_PREFIX = f"{INCOMING}/"
QUARANTINE_PREFIX = f"{QUARANTINE}/"

IMAGES_DIR = "images"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})

_FILE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_BATCH_ID = re.compile(r"^[0-9a-f]{16}$")
_CONTENT_REF = re.compile(rf"{IMAGES_DIR}/([0-9a-f]{{64}})(\.(?:png|jpg|webp|gif|bmp))")


# --- names -----------------------------------------------------------------------------------------------------------


def batch_id(data: bytes) -> str:
    """The id of a batch (and of a landed file, a quarantine folder): the first 16 hex digits of sha256(bytes)."""
    return hashlib.sha256(data).hexdigest()[:16]


def is_batch_id(value: str) -> bool:
    return isinstance(value, str) and _BATCH_ID.fullmatch(value) is not None


def is_file_name(name: str) -> bool:
    """A version's model file / attachment or a base snapshot file: '/'-separated segments of A-Z a-z 0-9 _ . -,
    each starting with a letter or digit, no '..'."""
    return (
        isinstance(name, str)
        and bool(name)
        and all(_FILE_SEGMENT.fullmatch(part) and ".." not in part for part in name.split("/"))
    )


def is_image_name(name: str) -> bool:
    """True when a file name has an image extension (such files in a landing zone are images, not data files)."""
    return posixpath.splitext(name.lower())[1] in IMAGE_SUFFIXES


def safe_file_name(name: str) -> str:
    """A user's file name made safe as the last part of a key: base name only, lower case, odd characters -> '_'.

    ``"../My Data (v2).JSONL"`` -> ``"my_data_v2.jsonl"``; the result always passes :func:`check_name`.
    """
    base = re.split(r"[\\/]", name)[-1]
    stem, ext = os.path.splitext(base)
    stem = re.sub(r"\.{2,}", ".", re.sub(r"[^a-z0-9_.-]+", "_", stem.lower())).strip("._-") or "data"
    ext = "." + re.sub(r"[^a-z0-9]+", "", ext.lower())[:12] if ext else ""
    ext = "" if ext == "." else ext
    return check_name("file", stem[: 64 - len(ext)].rstrip("._-") + ext)


def suffixed_file_name(file: str, data: bytes) -> str:
    """The landing name of ``file`` when its plain name already holds other bytes: ``<stem>-<batch id>.<ext>``."""
    stem, ext = os.path.splitext(file)
    return f"{stem[: 64 - len(ext) - 17]}-{batch_id(data)}{ext}"


# --- models ----------------------------------------------------------------------------------------------------------


def model_root(model: str) -> str:
    return f"{MODELS}/{check_name('model', model)}"


def model_info_key(model: str) -> str:
    return f"{model_root(model)}/{MODEL_INFO}"


def base_prefix(model: str) -> str:
    return f"{model_root(model)}/base/"


def base_file_key(model: str, name: str) -> str:
    return base_prefix(model) + name


def versions_prefix(model: str) -> str:
    return f"{model_root(model)}/versions/"


def version_prefix(model: str, version: str) -> str:
    return f"{versions_prefix(model)}{check_name('version', version)}/"


def version_file_key(model: str, version: str, name: str) -> str:
    return version_prefix(model, version) + name


def version_url(store_url: str, model: str, version: str) -> str:
    """Where a version lives, as a link for reports: the store's URL and the version's folder."""
    return f"{store_url.rstrip('/')}/{version_prefix(model, version)}"


def champion_key(model: str) -> str:
    return f"{model_root(model)}/{CHAMPION}"


def history_key(model: str) -> str:
    return f"{model_root(model)}/{HISTORY}"


def guards_key(model: str) -> str:
    return f"{model_root(model)}/{GUARDS}"


def guard_prefix(model: str, guard: str) -> str:
    return f"{model_root(model)}/guards/{check_name('guard', guard)}/"


def guard_prompts_key(model: str, guard: str, prompts_sha256: str) -> str:
    """A prompts-only guard's prompts, named by their content."""
    return f"{guard_prefix(model, guard)}prompts-{prompts_sha256[:16]}.jsonl"


def guard_base_score_key(model: str, guard: str, content_sha256: str) -> str:
    """A guard's base score, per guard content (its batches or lm-eval source)."""
    return f"{guard_prefix(model, guard)}base-{content_sha256[:16]}.json"


# --- tasks and batches -----------------------------------------------------------------------------------------------


def task_root(task: str) -> str:
    return f"{TASKS}/{check_name('task', task)}"


def task_spec_key(task: str) -> str:
    return f"{task_root(task)}/{TASK_SPEC}"


def task_of_spec_key(key: str) -> str | None:
    """The task whose spec ``key`` is (``tasks/<task>/task.json``), else None."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == TASKS and parts[2] == TASK_SPEC and parts[1]:
        return parts[1]
    return None


def image_content_ref(sha256: str, suffix: str) -> str:
    """An accepted image's content reference, ``images/<sha256>.<ext>``: how the accepted splits name it, and its key
    relative to the task's folder (:func:`task_image_key`)."""
    return f"{IMAGES_DIR}/{sha256}{suffix}"


def content_ref_hash(ref: str) -> str | None:
    """The sha256 a content reference names, or None when ``ref`` is not one."""
    m = _CONTENT_REF.fullmatch(ref)
    return m.group(1) if m else None


def task_image_key(task: str, ref: str) -> str:
    """An accepted image: ``ref`` is its content reference (:func:`image_content_ref`)."""
    return f"{task_root(task)}/{ref}"


def batches_prefix(task: str) -> str:
    return f"{task_root(task)}/batches/"


def batch_prefix(task: str, batch: str) -> str:
    return f"{batches_prefix(task)}{batch}/"


def batch_manifest_key(task: str, batch: str) -> str:
    return batch_prefix(task, batch) + BATCH_MANIFEST


def is_batch_manifest_key(task: str, key: str) -> bool:
    """``key`` is the ``batch.json`` of one of the task's batches."""
    prefix = batches_prefix(task)
    if not key.startswith(prefix):
        return False
    batch, _, name = key[len(prefix) :].partition("/")
    return is_batch_id(batch) and name == BATCH_MANIFEST


def split_file(side: str) -> str:
    """A batch's split, relative to the batch folder (the name its ``batch.json`` lists it under)."""
    return f"{side}.jsonl"


def key_file(side: str) -> str:
    """The keys of a batch's split (sorted uint64, :mod:`skillgraft.data.keyindex`), relative to the batch folder."""
    return f"keys.{side}"


def source_file(file: str) -> str:
    """The submitted bytes of a batch, relative to the batch folder."""
    return f"{SOURCE_DIR}/{file}"


def report_file(ext: str, n: int = 1) -> str:
    """A validation report relative to its folder: ``report.json`` / ``report.html``; ``n`` > 1 for a later report
    kept beside the first (``report.2.json``)."""
    return f"{REPORT}.{ext}" if n == 1 else f"{REPORT}.{n}.{ext}"


def split_key(task: str, batch: str, side: str) -> str:
    return batch_prefix(task, batch) + split_file(side)


# --- the landing zone, the quarantine and the announcements ----------------------------------------------------------


def landing_prefix(task: str | None = None) -> str:
    """``incoming/``, or one task's landing folder ``incoming/<task>/``."""
    return INCOMING_PREFIX if task is None else f"{INCOMING}/{check_name('task', task)}/"


def landed_key(task: str, name: str) -> str:
    """A file (or an image, by its relative path) in a task's landing folder."""
    return landing_prefix(task) + name


def in_landing_zone(key: str) -> bool:
    return key.startswith(INCOMING_PREFIX)


def landing_folder(key: str) -> str | None:
    """The task folder of a landing-zone key as it is spelled (valid task name or not); None for a key directly in
    ``incoming/`` or outside the landing zone."""
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == INCOMING else None


def landing_task(key: str) -> str | None:
    """The task a landing-zone key belongs to, or None (no task folder, or not a valid task name)."""
    folder = landing_folder(key)
    if folder is None:
        return None
    try:
        return check_name("task", folder)
    except ValueError:
        return None


def is_landed_image(key: str) -> bool:
    """An image inside a task's landing folder: it waits for the data file that references it."""
    return landing_folder(key) is not None and is_image_name(key)


def is_waiting_data_file(key: str) -> bool:
    """Is ``key`` a data file waiting in the landing zone: what the intake ingests and the watcher announces.

    Every object under ``incoming/`` is, except the images inside a task folder (valid task name or not: they wait
    for the data file that references them, and leave with it) and folder markers (a key ending in ``/``, as S3
    consoles create). A file the intake can't use (a hidden or temporary name, an unsupported extension, no task
    folder, an invalid or unknown task) is still one: ingesting moves it to quarantine with the reason.
    """
    if not in_landing_zone(key) or key.endswith("/") or key == INCOMING_PREFIX:
        return False
    return not is_landed_image(key)


def quarantine_prefix(task: str | None, batch: str) -> str:
    """The quarantine folder of a rejected file: under its task, or :data:`INVALID_TASK_DIR` (``task`` None) when
    it was not in a valid task folder."""
    folder = INVALID_TASK_DIR if task is None else check_name("task", task)
    return f"{QUARANTINE}/{folder}/{batch}/"


def announced_key(model: str, key: str, sha16: str) -> str:
    """The marker remembering that the landed file ``key`` with these bytes was announced for ``model``."""
    if not in_landing_zone(key):
        raise ValueError(f"{key!r} is not in the landing zone ({INCOMING_PREFIX}<task>/<file>)")
    return f"{ANNOUNCED}/{check_name('model', model)}/{key[len(INCOMING_PREFIX) :]}@{sha16}.json"
