"""Commands that run the retrain loop: demo, run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from skillgraft.cli.common import (
    ConfigOpt,
    ModelOpt,
    StoreOpt,
    console,
    err,
    fail,
    load_cfg,
    prefect_env,
    print_outcome,
)

app = typer.Typer()


@app.command()
def demo(
    store: StoreOpt = None,
    recipe: Annotated[str | None, typer.Option(help="sa_proj (default), mlp_gate_up, full, lora")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the loop on the built-in demo model and data (no network). Run it again to continue from the champion."""
    from skillgraft import demo as d
    from skillgraft.data import Intake
    from skillgraft.registry import Registry
    from skillgraft.store import open_store

    prefect_env()
    cfg = load_cfg(config, store=store, recipe=recipe, model=d.MODEL_NAME, base=d.BASE_SOURCE)
    st = open_store(cfg.store)
    intake = Intake(st)
    for spec in d.SPECS.values():
        intake.register_task(spec)
    reg = Registry(st, cfg.model)
    from flows.retrain import retrain

    if reg.info() is not None:
        reg.require_intact_pointer()  # a lost pointer is not "no champion yet": never bootstrap over a lineage
    pointer = reg.champion()
    if pointer is None:
        console.rule("bootstrap: teaching the bare demo model its first tasks (full fine-tune)")
        with tempfile.TemporaryDirectory() as tmp:
            for task in d.OLD_TASKS:
                intake.submit(task, d.write_jsonl(Path(tmp) / f"{task}-0.jsonl", d.generate(task, d.ROWS, seed=0)))
            outcome = retrain(
                model=cfg.model, store=cfg.store, recipe=recipe, config=str(config) if config else None, bootstrap=True
            )
        print_outcome(outcome)
        pointer = reg.champion()
        if pointer is None:
            fail("the bootstrap did not produce a champion; see the decision above")
    known = reg.manifest(pointer.version).tasks
    task, seed = d.next_task(known, {t: len(intake.batches(t)) for t in d.NEW_TASKS})
    console.rule(f"retrain: teaching '{task}' to champion {pointer.version} with recipe {cfg.recipe.kind}")
    with tempfile.TemporaryDirectory() as tmp:
        intake.submit(
            task,
            d.write_jsonl(
                Path(tmp) / f"{task}-{seed}.jsonl",
                d.generate(task, d.NEW_ROWS, seed=seed, exclude=d.known_prompts(intake, task)),
            ),
        )
        outcome = retrain(
            model=cfg.model, task=task, store=cfg.store, recipe=recipe, config=str(config) if config else None
        )
    print_outcome(outcome)
    console.print(f"store: {st.url}   next: `skillgraft history --store {cfg.store}`, `skillgraft rollback`")


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="task name (registered with --spec the first time)")],
    files: Annotated[list[Path], typer.Argument(help="JSONL, CSV or Parquet files with prompt and answer columns")],
    model: ModelOpt = None,
    base: Annotated[str | None, typer.Option(help="base model for a new model: hub id, directory or .gguf")] = None,
    revision: Annotated[str | None, typer.Option(help="with a hub id as base: the branch, tag or commit")] = None,
    snapshot_base: Annotated[
        bool | None,
        typer.Option(
            "--snapshot-base/--no-snapshot-base",
            help="copy a new model's base weights into the store (self-contained store)",
        ),
    ] = None,  # fmt: skip
    spec: Annotated[Path | None, typer.Option(help="task spec YAML (needed the first time a task is seen)")] = None,
    recipe: Annotated[str | None, typer.Option(help="sa_proj (default), mlp_gate_up, full, lora")] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Submit FILES as new data for TASK and run the retrain flow on them."""
    from skillgraft.cli.data import open_intake, submit_files

    prefect_env()
    cfg = load_cfg(config, store=store, model=model, recipe=recipe, base=base, revision=revision,
                   snapshot_base=snapshot_base)  # fmt: skip
    for f in files:
        if not f.is_file():
            fail(f"{f}: no such file; nothing was submitted", 2)
    from skillgraft.steps import check_base
    from skillgraft.store import open_store

    check_base(open_store(cfg.store), cfg)  # a registered model asked for another base: stop before submitting
    from skillgraft.steps import unguarded_warning

    if warning := unguarded_warning(open_store(cfg.store), cfg):
        err.print(f"[bold yellow]WARNING:[/] {warning}")
    intake = open_intake(cfg, task, spec)
    submit_files(intake, task, files)
    from flows.retrain import retrain

    outcome = retrain(model=cfg.model, task=task, store=cfg.store, recipe=recipe, config=str(config) if config else None,
                      base=base, revision=revision, snapshot_base=snapshot_base)  # fmt: skip
    print_outcome(outcome)
    if outcome.status not in ("promoted",):
        raise typer.Exit(3 if outcome.status == "rejected" else 1)
