"""The registry's errors: each one something about a model or version that the user can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skillgraft.registry.records import ChampionPointer, HistoryEntry


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
