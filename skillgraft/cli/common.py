"""Shared options and output helpers of the ``skillgraft`` command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)

StoreOpt = Annotated[Optional[str], typer.Option("--store", envvar="SKILLGRAFT_STORE", help="store URL: a directory or s3://bucket/prefix")]  # fmt: skip
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", envvar="SKILLGRAFT_MODEL", help="registered model name")]  # fmt: skip
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="skillgraft.yaml")]


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
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-load "Loading weights" bars drown the run's own output


def print_outcome(outcome) -> None:
    if outcome.report is not None:
        r = outcome.report
        table = Table(title=f"Regression suite — candidate {r.candidate} vs champion {r.champion}")
        for col in ("task", "kind", "n", "champion", "candidate", "delta"):
            table.add_column(col, justify="right" if col not in ("task", "kind") else "left")
        for row in r.rows:
            color = "green" if row.delta >= 0 else "red"
            table.add_row(row.task, "new" if row.new else "old", str(row.n), f"{row.champion:.3f}",
                          f"{row.candidate:.3f}", f"[{color}]{row.delta:+.3f}[/]")  # fmt: skip
        console.print(table)
        if r.probe is not None:
            console.print(f"bias probe (number-token mass on old-task prompts): champion {r.probe.champion:.4f} → "
                          f"candidate {r.probe.candidate:.4f} ({r.probe.delta:+.4f})")  # fmt: skip
    if outcome.decision is not None:
        d = outcome.decision
        console.print(f"[bold]decision: {d.verdict.upper()}[/] ({d.candidate} vs {d.champion})")
        for reason in d.reasons:
            console.print(f"  - {reason}")
    console.print(f"[bold]outcome:[/] {outcome.status}; champion of {outcome.model}: {outcome.champion or 'none'}")
    for note in outcome.notes:
        console.print(f"  note: {note}")
