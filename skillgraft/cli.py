"""The ``skillgraft`` command line. Every command takes ``--store`` (env SKILLGRAFT_STORE; default a local directory).

Commands that train run the Prefect ``retrain`` flow (imported only then: the core library does not need Prefect).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err = Console(stderr=True)

StoreOpt = Annotated[Optional[str], typer.Option("--store", envvar="SKILLGRAFT_STORE", help="store URL: a directory or s3://bucket/prefix")]  # fmt: skip
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", envvar="SKILLGRAFT_MODEL", help="registered model name")]  # fmt: skip
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="skillgraft.yaml")]


def _cfg(config: Path | None, **overrides):
    from skillgraft.config import ConfigError, load_config

    try:
        return load_config(config, **overrides)
    except ConfigError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1):
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def _prefect_env() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


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


@app.command()
def demo(
    store: StoreOpt = None,
    recipe: Annotated[Optional[str], typer.Option(help="sa_proj (default), mlp_gate_up, full, lora")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the loop on the built-in demo model and data (no network). Run it again to continue from the champion."""
    from skillgraft import demo as d
    from skillgraft.data import Intake
    from skillgraft.registry import Registry
    from skillgraft.store import open_store

    _prefect_env()
    cfg = _cfg(config, store=store, recipe=recipe, model=d.MODEL_NAME, base=d.BASE_SOURCE)
    st = open_store(cfg.store)
    intake = Intake(st)
    for spec in d.SPECS.values():
        intake.register_task(spec)
    reg = Registry(st, cfg.model)
    from flows.retrain import retrain

    pointer = reg.champion()
    if pointer is None:
        console.rule("bootstrap: teaching the bare demo model its first tasks (full fine-tune)")
        with tempfile.TemporaryDirectory() as tmp:
            for task in d.OLD_TASKS:
                intake.submit(task, d.write_jsonl(Path(tmp) / f"{task}-0.jsonl", d.generate(task, d.ROWS, seed=0)))
            outcome = retrain(model=cfg.model, store=cfg.store, recipe=recipe, config=str(config) if config else None, bootstrap=True)
        print_outcome(outcome)
        pointer = reg.champion()
        if pointer is None:
            _fail("the bootstrap did not produce a champion; see the decision above")
    known = reg.manifest(pointer.version).tasks
    task, seed = d.next_task(known, {t: len(intake.batches(t)) for t in d.NEW_TASKS})
    console.rule(f"retrain: teaching '{task}' to champion {pointer.version} with recipe {cfg.recipe.kind}")
    with tempfile.TemporaryDirectory() as tmp:
        intake.submit(task, d.write_jsonl(Path(tmp) / f"{task}-{seed}.jsonl", d.generate(task, d.NEW_ROWS, seed=seed)))
        outcome = retrain(model=cfg.model, task=task, store=cfg.store, recipe=recipe, config=str(config) if config else None)
    print_outcome(outcome)
    console.print(f"store: {st.url}   next: `skillgraft history --store {cfg.store}`, `skillgraft rollback`")


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="task name (registered with --spec the first time)")],
    files: Annotated[list[Path], typer.Argument(help="JSONL, CSV or Parquet files with prompt and answer columns")],
    model: ModelOpt = None,
    base: Annotated[Optional[str], typer.Option(help="base model for a new model: hub id, directory or .gguf")] = None,
    spec: Annotated[Optional[Path], typer.Option(help="task spec YAML (needed the first time a task is seen)")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="sa_proj (default), mlp_gate_up, full, lora")] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Submit FILES as new data for TASK and run the retrain flow on them."""
    from skillgraft.data import Intake, TaskSpec
    from skillgraft.store import open_store

    _prefect_env()
    cfg = _cfg(config, store=store, model=model, recipe=recipe, base=base)
    intake = Intake(open_store(cfg.store))
    if spec is not None:
        intake.register_task(TaskSpec.from_yaml(spec))
    elif task not in intake.tasks():
        _fail(f"task {task!r} is not registered in {cfg.store}; pass --spec task.yaml the first time")
    for f in files:
        if not f.is_file():
            _fail(f"{f}: no such file")
        intake.submit(task, f)
    from flows.retrain import retrain

    outcome = retrain(model=cfg.model, task=task, store=cfg.store, recipe=recipe, config=str(config) if config else None)
    print_outcome(outcome)
    if outcome.status not in ("promoted",):
        raise typer.Exit(3 if outcome.status == "rejected" else 1)


@app.command()
def status(model: ModelOpt = None, store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """The champion and every stored version, with incomplete or corrupt ones flagged."""
    from skillgraft.registry import Registry
    from skillgraft.store import open_store

    cfg = _cfg(config, store=store, model=model)
    reg = Registry(open_store(cfg.store), cfg.model)
    info = reg.info()
    if info is None:
        _fail(f"model {cfg.model!r} is not registered in {cfg.store}")
    pointer = reg.champion()
    console.print(f"model [bold]{cfg.model}[/] on base {info.base.source} (sha256 {info.base.sha256[:12]}…)")
    console.print(f"champion: [bold]{pointer.version if pointer else 'none'}[/]")
    table = Table()
    for col in ("version", "status", "parent", "recipe", "tasks", "created"):
        table.add_column(col)
    for v in reg.versions():
        table.add_row(v.version, v.status, v.parent or "base", v.recipe or "", ", ".join(v.tasks), v.created_at or "")
    console.print(table)


@app.command()
def history(model: ModelOpt = None, store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """Every promotion, rejection and rollback: who, when, why."""
    from skillgraft.registry import Registry
    from skillgraft.store import open_store

    cfg = _cfg(config, store=store, model=model)
    reg = Registry(open_store(cfg.store), cfg.model)
    table = Table(title=f"history of {cfg.model}")
    for col in ("at", "action", "version", "from", "actor", "reason"):
        table.add_column(col, overflow="fold")
    for h in reg.history():
        table.add_row(h.at, h.action, h.version or "", h.from_version or "", h.actor, h.reason)
    console.print(table)


@app.command()
def rollback(
    version: Annotated[Optional[str], typer.Argument(help="version to make champion (default: the previous one)")] = None,
    reason: Annotated[str, typer.Option(help="why, recorded in the history")] = "manual rollback",
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Move the champion back (to VERSION, or to the champion before the current one)."""
    from skillgraft.registry import Registry, RegistryError
    from skillgraft.store import open_store

    cfg = _cfg(config, store=store, model=model)
    reg = Registry(open_store(cfg.store), cfg.model)
    before = reg.champion()
    try:
        pointer = reg.rollback(version, reason=reason)
    except RegistryError as e:
        _fail(str(e))
    console.print(f"champion of {cfg.model}: {before.version if before else 'none'} → [bold]{pointer.version}[/]")


@app.command()
def export(
    version: Annotated[Optional[str], typer.Argument(help="version (default: the champion)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory to write")] = Path("exported-model"),
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a full Hugging Face model directory (safetensors) for serving."""
    from skillgraft.steps import export as do_export
    from skillgraft.store import open_store

    cfg = _cfg(config, store=store, model=model)
    path = do_export(open_store(cfg.store), cfg.model, version, out)
    console.print(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
