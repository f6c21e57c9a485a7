"""Task data: task specs, reading JSONL/CSV/Parquet files, GX validation, the deterministic split and the intake
(landing zone -> accepted batch or quarantine) on an object store. No Prefect here; GX is imported on first use."""

from skillgraft.data.intake import (
    BatchCorrupted,
    BatchManifest,
    BatchRejected,
    IngestResult,
    Intake,
    IntakeError,
    TaskSpecConflict,
    UnknownTask,
    safe_file_name,
)
from skillgraft.data.io import DataError, Record, read_examples, read_records
from skillgraft.data.spec import Example, TaskSpec, TaskSpecError
from skillgraft.data.split import assign_sides, eval_score, example_key
from skillgraft.data.validate import RuleResult, ValidationReport, build_suite, validate_file, validate_records

__all__ = [
    "BatchCorrupted",
    "BatchManifest",
    "BatchRejected",
    "DataError",
    "Example",
    "IngestResult",
    "Intake",
    "IntakeError",
    "Record",
    "RuleResult",
    "TaskSpec",
    "TaskSpecConflict",
    "TaskSpecError",
    "UnknownTask",
    "ValidationReport",
    "assign_sides",
    "build_suite",
    "eval_score",
    "example_key",
    "read_examples",
    "read_records",
    "safe_file_name",
    "validate_file",
    "validate_records",
]
