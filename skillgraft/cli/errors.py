"""One place that turns what went wrong into one line a user can act on, and an exit code — never a traceback.

Every command of the ``skillgraft`` CLI runs through :func:`friendly`. Known failures (typed errors of the store,
registry, intake, model loading, config; a full disk or a read-only store; an embedded Prefect server that did not
start) print ``error: <what, where, what happened to the data>``. Anything else prints one line naming the error
and the file its traceback was written to. ``SKILLGRAFT_DEBUG=1`` lets the original exception through.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import click
import typer

EXIT_FAILED = 1  # the store, the registry or a run failed
EXIT_INPUT = 2  # the input (config, files, names, base model) is wrong; nothing was changed

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT_S = "180"


def friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a CLI command so that failures end as one clear line on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("SKILLGRAFT_DEBUG") == "1":
                raise
            message, code = describe(e)
            from skillgraft.cli.common import err

            err.print(f"[red]error:[/] {message}", markup=True, highlight=False)
            raise typer.Exit(code) from None

    return wrapper


def describe(e: BaseException) -> tuple[str, int]:
    """The user's line for ``e`` and the exit code."""
    from skillgraft.config import ConfigError
    from skillgraft.data import IntakeError, TaskSpecError
    from skillgraft.data.images import ImageProblem
    from skillgraft.data.io import DataError
    from skillgraft.guards import GuardError
    from skillgraft.names import InvalidName
    from skillgraft.registry import BaseMismatch, RegistryError
    from skillgraft.store.base import StoreError

    e = _unwrap(e)
    if isinstance(e, (ConfigError, InvalidName, TaskSpecError, DataError, ImageProblem, GuardError)):
        return str(e), EXIT_INPUT
    if isinstance(e, BaseMismatch):
        return str(e), EXIT_INPUT
    if isinstance(e, IntakeError):
        return f"{e}", EXIT_INPUT
    if isinstance(e, (RegistryError, StoreError)):
        return str(e), EXIT_FAILED
    model_error = _model_error(e)
    if model_error is not None:
        return model_error, EXIT_INPUT
    if isinstance(e, OSError) and e.errno in _DISK_ERRORS:
        where = f" at {e.filename}" if e.filename else ""
        return (f"{_DISK_ERRORS[e.errno]}{where} ({e.strerror}). Nothing half-written is used: versions, pointers "
                f"and batches are written whole or not at all; free the space or fix the permissions and run again."), EXIT_FAILED  # fmt: skip
    if _is_startup_timeout(e):
        limit = os.environ.get(STARTUP_TIMEOUT_ENV, DEFAULT_STARTUP_TIMEOUT_S)
        return (f"the embedded Prefect server did not start within {limit} s ({e}). Nothing was trained; data you "
                f"submitted waits in the landing zone. Run the same command again, raise {STARTUP_TIMEOUT_ENV}, or "
                f"start a server once (`skillgraft server`, or `prefect server start`) and set PREFECT_API_URL="
                f"http://127.0.0.1:4200/api so runs reuse it."), EXIT_FAILED  # fmt: skip
    return _unexpected(e), EXIT_FAILED


_DISK_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the store is on a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def _unwrap(e: BaseException) -> BaseException:
    """The error a Prefect task raised, where Prefect wrapped it (a failed state carries the original)."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "__cause__", None)
        if type(e).__module__.startswith("prefect") and inner is not None:
            e = inner
            continue
        break
    return e


def _model_error(e: BaseException) -> str | None:
    from skillgraft.models.delta import DeltaError
    from skillgraft.models.load import ModelSourceError
    from skillgraft.recipes import RecipeError

    if type(e).__name__ == "LmEvalError":
        return f"lm-eval: {_sentence(e)}"
    if isinstance(e, ModelSourceError):
        return f"base model: {_sentence(e)} Nothing was trained."
    if isinstance(e, RecipeError):
        return f"recipe: {_sentence(e)} Nothing was trained."
    if isinstance(e, DeltaError):
        return f"stored delta: {e}"
    if type(e).__name__ == "SafetensorError":
        return f"a safetensors file could not be read: {_sentence(e)} Nothing was trained."
    return None


def _sentence(e: BaseException) -> str:
    text = str(e).rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _is_startup_timeout(e: BaseException) -> bool:
    return isinstance(e, (RuntimeError, TimeoutError)) and "ephemeral" in str(e).lower()


def _unexpected(e: BaseException) -> str:
    with tempfile.NamedTemporaryFile("w", prefix="skillgraft-error-", suffix=".log", delete=False) as f:
        f.write("".join(traceback.format_exception(e)))
    first = str(e).splitlines()[0] if str(e) else ""
    return (
        f"unexpected {type(e).__name__}: {first} — the traceback is in {f.name}; set SKILLGRAFT_DEBUG=1 to "
        f"see it here. Please report it with that file."
    )
