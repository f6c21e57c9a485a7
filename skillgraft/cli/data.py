"""Commands on task data: validate (check only), submit (to the landing zone), ingest (accept or quarantine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from skillgraft.cli.common import ConfigOpt, ModelOpt, StoreOpt, console, err, fail, load_cfg

app = typer.Typer()

SpecOpt = Annotated[Path | None, typer.Option("--spec", help="task spec YAML (registers the task if new)")]


def open_intake(cfg, task: str, spec: Path | None):
    from skillgraft.data import Intake, TaskSpec, TaskSpecError
    from skillgraft.names import InvalidName, check_name
    from skillgraft.store import open_store

    intake = Intake(open_store(cfg.store))
    try:
        check_name("task", task)
        if spec is not None:
            loaded = TaskSpec.from_yaml(spec)
            if loaded.name != task:
                fail(f"{spec}: spec is for task {loaded.name!r}, not {task!r}")
            intake.register_task(loaded)
    except (InvalidName, TaskSpecError) as e:
        fail(str(e), 2)
    if task not in intake.tasks():
        fail(f"task {task!r} is not registered in {cfg.store}; pass --spec task.yaml (see README: Task data)", 2)
    return intake


def _intake_for_check(cfg, task: str, spec: Path | None):
    """The intake, and the spec to check against: ``--spec`` as given (never registered: validate writes nothing),
    else the registered one. A ``--spec`` that differs from the registered spec is refused (the data would be
    checked by rules the intake would not apply)."""
    from skillgraft.data import Intake, TaskSpec, TaskSpecError, UnknownTask
    from skillgraft.names import InvalidName, check_name
    from skillgraft.store import open_store

    intake = Intake(open_store(cfg.store))
    try:
        check_name("task", task)
        loaded = TaskSpec.from_yaml(spec) if spec is not None else None
    except (InvalidName, TaskSpecError) as e:
        fail(str(e), 2)
    if loaded is not None and loaded.name != task:
        fail(f"{spec}: spec is for task {loaded.name!r}, not {task!r}", 2)
    try:
        registered = intake.task_spec(task)
    except UnknownTask:
        if loaded is None:
            fail(f"task {task!r} is not registered in {cfg.store}; pass --spec task.yaml (see README: Task data)", 2)
        return intake, loaded
    if loaded is not None and loaded != registered:
        old, new = registered.model_dump(), loaded.model_dump()
        changes = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in old if old[k] != new[k])
        fail(f"{spec}: task {task!r} is registered with a different spec ({changes}); its data is checked by the "
             f"registered spec. Use a new task name for the new rules.", 2)  # fmt: skip
    return intake, registered


def submit_files(intake, task: str, files: list[Path]) -> list[str]:
    """Land each file (and the images it references); stop at the first that can't be submitted, saying which
    files already landed."""
    from skillgraft.data import IntakeError

    keys: list[str] = []
    for f in files:
        try:
            keys.append(intake.submit(task, f))
        except IntakeError as e:
            fail(f"{e}" + (f" (already landed: {', '.join(keys)})" if keys else ""))
    return keys


def _files(files: list[Path]) -> None:
    for f in files:
        if not f.is_file():
            fail(f"{f}: no such file; nothing was submitted", 2)


@app.command()
def validate(
    task: Annotated[str, typer.Argument(help="task name")],
    files: Annotated[list[Path], typer.Argument(help="JSONL, CSV or Parquet files")],
    spec: SpecOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check FILES against TASK's rules (the same as intake, leakage included) without submitting anything."""
    cfg = load_cfg(config, store=store)
    _files(files)
    intake, candidate = _intake_for_check(cfg, task, spec)
    bad = 0
    for f in files:
        report = intake.check(task, f, candidate)
        mark = "[green]ok[/]" if report.success else "[red]REJECTED[/]"
        console.print(f"{mark} {f}: {report.rows} rows ({report.train_rows} train / {report.eval_rows} eval), "
                      f"batch id {report.batch_id}")  # fmt: skip
        if not report.success:
            bad += 1
            table = Table(show_header=True)
            for col in ("rule", "column", "observed", "detail"):
                table.add_column(col, overflow="fold")
            for r in report.results:
                if not r.success:
                    table.add_row(r.rule, r.column or "", str(r.observed), r.detail)
            console.print(table)
            for line in report.problems[:20]:
                console.print(f"  {line}")
            if len(report.problems) > 20:
                console.print(f"  … and {len(report.problems) - 20} more")
    raise typer.Exit(1 if bad else 0)


@app.command()
def submit(
    task: Annotated[str, typer.Argument(help="task name")],
    files: Annotated[list[Path], typer.Argument(help="JSONL, CSV or Parquet files")],
    spec: SpecOpt = None,
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Put FILES in TASK's landing zone and announce them (event skillgraft.data.arrived) for a triggered retrain."""
    cfg = load_cfg(config, store=store, model=model)
    _files(files)
    intake = open_intake(cfg, task, spec)
    keys = submit_files(intake, task, files)
    for key in keys:
        console.print(f"landed {key}")
    from flows.watch import NoPrefectServer, announce
    from skillgraft.store import open_store

    st = open_store(cfg.store)
    for key in keys:
        try:
            announce(st, task, key, cfg.model)
        except NoPrefectServer as e:
            err.print(f"[yellow]not announced:[/] {e}. The file stays landed: the watch deployment, the next "
                      "scheduled retrain, `skillgraft ingest` or `skillgraft run` will pick it up.")  # fmt: skip
            return
        console.print(f"announced {key}: skillgraft.data.arrived for model {cfg.model}")


@app.command()
def ingest(
    task: Annotated[str | None, typer.Option(help="only this task's landing zone")] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Process the landing zone once: accept valid files as batches, quarantine the rest (with reports). No training."""
    from skillgraft.data import Intake
    from skillgraft.store import open_store

    cfg = load_cfg(config, store=store)
    intake = Intake(open_store(cfg.store))
    results = intake.ingest(task)
    orphans = intake.orphaned_images(task)
    if not results:
        console.print("no data files in the landing zone")
    for r in results:
        color = {"accepted": "green", "duplicate": "yellow", "quarantined": "red"}[r.status]
        console.print(f"[{color}]{r.status}[/] {r.key} → {r.location}: {r.message}")
    if orphans:
        shown = ", ".join(orphans[:5]) + (f" and {len(orphans) - 5} more" if len(orphans) > 5 else "")
        console.print(f"[yellow]{len(orphans)} landed image(s) no waiting data file names[/] (left in place for a "
                      f"corrected file; delete them when they are not needed): {shown}")  # fmt: skip
    raise typer.Exit(1 if any(r.status == "quarantined" for r in results) else 0)
