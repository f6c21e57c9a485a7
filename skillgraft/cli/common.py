"""Shared options and output helpers of the ``skillgraft`` command line."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

# C0 controls but tab and newline, DEL and C1: what a terminal would act on (colours, clearing, titles, cursor moves).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with every control character shown as ``\\xNN`` instead of sent to the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class SafeConsole(Console):
    """A rich Console that never passes a control character from data (a task name, a ``--reason``, a field name
    read from a file) to the terminal: every string it renders — print arguments, table cells — goes through
    :func:`visible` first. Its own styling is added after, so colours still work."""

    def render_str(self, text: str, **kwargs):  # type: ignore[override]
        return super().render_str(visible(text), **kwargs)


console = SafeConsole()
err = SafeConsole(stderr=True, soft_wrap=True)  # an error line stays one line: a path in it is never broken in a log

StoreOpt = Annotated[str | None, typer.Option("--store", envvar="SKILLGRAFT_STORE", help="store URL: a directory or s3://bucket/prefix")]  # fmt: skip
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", envvar="SKILLGRAFT_MODEL", help="registered model name")]  # fmt: skip
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="skillgraft.yaml")]


def load_cfg(config: Path | None, **overrides):
    from skillgraft.config import ConfigError, load_config

    try:
        return load_config(config, **overrides)
    except ConfigError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1):
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def prefect_env() -> None:
    """Settings for a command that runs a flow: a startup timeout for the embedded Prefect server that a cold start
    on a busy machine meets (Prefect's own 20 s default is often too short; overridable), and Prefect's console
    logging without tracebacks (the error itself is printed once by :mod:`skillgraft.cli.errors`; the full trace still
    goes to the Prefect API, where the UI shows it, and ``SKILLGRAFT_DEBUG=1`` keeps it on the console)."""
    from skillgraft.cli.errors import DEFAULT_STARTUP_TIMEOUT_S, STARTUP_TIMEOUT_ENV

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault(STARTUP_TIMEOUT_ENV, DEFAULT_STARTUP_TIMEOUT_S)
    if not os.environ.get("PREFECT_API_URL"):
        # No server configured: the flow starts an embedded one on PREFECT_HOME's SQLite database. Two runs at once
        # share that file; let a statement wait for the other's lock (Prefect's default gives up after 10 s), and keep
        # the embedded server's own log (a lock it retried, its shutdown) off the user's terminal.
        os.environ.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", "60")
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-load "Loading weights" bars drown the run's own output
    if os.environ.get("SKILLGRAFT_DEBUG") != "1":
        _quiet_prefect_tracebacks()


class _NoTraceback(logging.Filter):
    """Keep a log line, drop the traceback Prefect attaches to it (as exc_info or inside the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info or record.exc_text or "Traceback (most recent call last)" in message:
            record.exc_info, record.exc_text = None, None
            record.msg, record.args = message.split("\nTraceback (most recent call last)")[0], None
        return True


def _quiet_prefect_tracebacks() -> None:
    import prefect.main  # noqa: F401  (configures Prefect's logging handlers)
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _NoTraceback) for f in handler.filters
            ):
                handler.addFilter(_NoTraceback())


_GATE_CELL = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "—"}


def print_outcome(outcome) -> None:
    if outcome.report is not None:
        r = outcome.report
        d = outcome.decision
        table = Table(title=f"Regression suite — candidate {r.candidate} vs champion {r.champion}")
        for col in ("task", "kind", "n", "champion", "candidate", "delta", *(("gate",) if d is not None else ())):
            table.add_column(col, justify="right" if col not in ("task", "kind", "gate") else "left")
        for row in r.rows:
            color = "green" if row.delta >= 0 else "red"
            gate = [] if d is None else [_GATE_CELL[d.task_verdict(row.task)]]  # the gate's own checks of the row
            table.add_row(row.task, row.kind, str(row.n), f"{row.champion:.3f}",
                          f"{row.candidate:.3f}", f"[{color}]{row.delta:+.3f}[/]", *gate)  # fmt: skip
        console.print(table)
        if r.probe is not None:
            kl = f"; KL {r.probe.kl:.4f} nats" if r.probe.kl is not None else ""
            console.print(f"drift probes on {r.probe.prompts} old-task and guard prompts: number-token mass champion "
                          f"{r.probe.champion:.4f} → candidate {r.probe.candidate:.4f} ({r.probe.delta:+.4f}){kl}")  # fmt: skip
    if outcome.decision is not None:
        d = outcome.decision
        console.print(f"[bold]decision: {d.verdict.upper()}[/] ({d.candidate} vs {d.champion})")
        for reason in d.reasons:
            console.print(f"  - {reason}")
    console.print(f"[bold]outcome:[/] {outcome.status}; champion of {outcome.model}: {outcome.champion or 'none'}")
    for note in outcome.notes:
        console.print(f"  note: {note}")
