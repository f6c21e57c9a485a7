"""The intake's errors: each a problem with task data the user can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skillgraft.data.validate import ValidationReport


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
