"""`skillgraft guard add|list|remove`: the held-out sets that protect what a model already knows (skillgraft.guards).

A guard is scored in every regression suite (champion, candidate and base) and protected by the gate with its own
tolerance; it is never trained on, never replayed, and no training row may repeat one of its prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from skillgraft.cli.common import ConfigOpt, ModelOpt, StoreOpt, console, fail, load_cfg

app = typer.Typer(no_args_is_help=True, help=__doc__)


def _open(config, store, model):
    from skillgraft.store import open_store

    cfg = load_cfg(config, store=store, model=model)
    return cfg, open_store(cfg.store)


def _guard_spec(name: str, spec: Path | None, metric: str, max_new_tokens: int):
    from skillgraft.data import TaskSpec

    if spec is None:
        return TaskSpec(name=name, role="guard", metric=metric, max_new_tokens=max_new_tokens, eval_fraction=0.5,
                        min_rows=2, description=f"guard set {name}")  # fmt: skip
    loaded = TaskSpec.from_yaml(spec)
    if loaded.name != name:
        fail(f"{spec}: spec is for {loaded.name!r}, not {name!r}", 2)
    if loaded.role != "guard":
        loaded = loaded.model_copy(update={"role": "guard"})
    return loaded


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="guard name (becomes a folder / key, like a task name)")],
    files: Annotated[
        list[Path] | None, typer.Argument(help="JSONL, CSV or Parquet files of prompt/answer rows")
    ] = None,
    spec: Annotated[Path | None, typer.Option(help="task spec YAML for the files (role is set to guard)")] = None,
    metric: Annotated[str, typer.Option(help="without --spec: exact_match or first_word")] = "exact_match",
    max_new_tokens: Annotated[int, typer.Option(help="without --spec: generation budget per prompt")] = 16,
    lm_eval: Annotated[
        str | None, typer.Option("--lm-eval", help="an lm-evaluation-harness task name (e.g. arc_easy)")
    ] = None,  # fmt: skip
    include: Annotated[Path | None, typer.Option(help="with --lm-eval: a local task YAML file or folder")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="with --lm-eval: score the first N documents only")] = None,
    tolerance: Annotated[
        float | None, typer.Option(min=0, max=1, help="largest allowed drop (default gate.guard_max_drop)")
    ] = None,  # fmt: skip
    prompts_only: Annotated[
        bool,
        typer.Option(
            "--prompts-only",
            help="FILES hold prompts without answers (JSONL 'prompt' field, or one a line): for the drift probes only",
        ),
    ] = False,  # fmt: skip
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add a guard to MODEL: FILES through the intake (validated, quarantined when bad), or an lm-eval task."""
    from skillgraft.guards import GuardEntry, LmEvalSource, add_guard
    from skillgraft.names import check_name
    from skillgraft.registry import default_actor

    check_name("guard", name)
    if metric not in ("exact_match", "first_word"):
        fail(f"--metric {metric!r}: use exact_match or first_word", 2)
    if bool(files) == bool(lm_eval):
        fail("give either FILES (your own prompt/answer rows) or --lm-eval TASK, not both and not neither", 2)
    if (include or limit) and not lm_eval:
        fail("--include and --limit go with --lm-eval", 2)
    if prompts_only and (spec or tolerance is not None):
        fail("--prompts-only guards are not scored: --spec and --tolerance do not apply", 2)
    cfg, st = _open(config, store, model)
    if prompts_only:
        from skillgraft.guards import read_probe_prompts, store_probe_prompts

        prompts = [p for f in files or [] for p in read_probe_prompts(f, name)]
        digest, n = store_probe_prompts(st, cfg.model, name, prompts)
        add_guard(st, cfg.model, GuardEntry(name=name, kind="prompts", prompts_sha256=digest, prompts=n,
                                            added_by=default_actor()))  # fmt: skip
        console.print(f"guard {name!r} added to model {cfg.model!r}: {n} prompts for the drift probes (KL and "
                      f"number-token mass, champion against candidate); not scored")  # fmt: skip
        return
    if lm_eval:
        from skillgraft.lm_eval_guard import describe_task

        about = describe_task(lm_eval, include_path=str(include.resolve()) if include else None)
        source = LmEvalSource(task=lm_eval, include_path=str(include.resolve()) if include else None, limit=limit,
                              metric=about["metric"], config_sha256=about["config_sha256"])  # fmt: skip
        entry = GuardEntry(name=name, kind="lm-eval", tolerance=tolerance, lm_eval=source, added_by=default_actor())
        add_guard(st, cfg.model, entry)
        docs = min(about["docs"], limit) if limit else about["docs"]
        console.print(f"guard {name!r} added to model {cfg.model!r}: lm-eval task {lm_eval} ({about['output_type']}, "
                      f"metric {about['metric']}, {docs} documents)")  # fmt: skip
        return
    _add_files(st, cfg, name, files or [], _guard_spec(name, spec, metric, max_new_tokens), tolerance)


def _add_files(st, cfg, name: str, files: list[Path], spec, tolerance: float | None) -> None:
    from skillgraft.data import Intake
    from skillgraft.guards import GuardEntry, add_guard
    from skillgraft.registry import default_actor

    for f in files:
        if not f.is_file():
            fail(f"{f}: no such file; nothing was added", 2)
    intake = Intake(st)
    if name in intake.tasks() and intake.task_spec(name).role != "guard":
        fail(f"{name!r} is a task the model is taught, not a guard: pick another name", 2)
    intake.register_task(spec)
    results = [intake.ingest_key(intake.submit(name, f)) for f in files]
    bad = [r for r in results if r.status == "quarantined"]
    for r in results:
        color = {"accepted": "green", "duplicate": "yellow", "quarantined": "red"}[r.status]
        console.print(f"[{color}]{r.status}[/] {r.message}")
    if bad:
        fail(f"{len(bad)} file(s) of guard {name!r} were quarantined (see above); the guard was not added", 1)
    add_guard(st, cfg.model, GuardEntry(name=name, kind="data", tolerance=tolerance, added_by=default_actor()))
    rows = sum(len(intake.load_split(b, "eval")) for b in intake.batches(name))
    console.print(f"guard {name!r} added to model {cfg.model!r}: {rows} held-out rows, metric {spec.metric}; no "
                  f"training row of any task may repeat one of its prompts")  # fmt: skip


@app.command("list")
def list_(model: ModelOpt = None, store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """The guards of MODEL, with their size, metric and tolerance."""
    from skillgraft.data import Intake
    from skillgraft.guards import read_guards

    cfg, st = _open(config, store, model)
    guards = read_guards(st, cfg.model).guards
    if not guards:
        console.print(f"model {cfg.model!r} has no guards: nothing protects what its base already knows. Add one: "
                      f"`skillgraft guard add NAME FILE...` or `skillgraft guard add NAME --lm-eval TASK`")  # fmt: skip
        return
    intake = Intake(st)
    table = Table(title=f"Guards of {cfg.model}")
    for col in ("guard", "kind", "rows", "metric", "tolerance", "source", "added"):
        table.add_column(col)
    for g in guards:
        if g.kind == "lm-eval":
            src = g.lm_eval.task + (f" ({g.lm_eval.include_path})" if g.lm_eval.include_path else "")
            rows, metric = str(g.lm_eval.limit or "all"), g.lm_eval.metric
        elif g.kind == "prompts":
            src, rows, metric = f"prompts {g.prompts_sha256[:12]}", str(g.prompts), "(drift probes only)"
        else:
            src = ", ".join(b.batch_id for b in intake.batches(g.name))
            rows, metric = str(sum(b.eval_rows for b in intake.batches(g.name))), intake.task_spec(g.name).metric
        tol = f"{g.tolerance:.3f}" if g.tolerance is not None else "gate"
        table.add_row(g.name, g.kind, rows, metric, tol, src, f"{g.added_at} {g.added_by}")
    console.print(table)


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="guard name")],
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stop guarding MODEL with NAME (its data stays in the store; its prompts stay off-limits for training)."""
    from skillgraft.guards import remove_guard

    cfg, st = _open(config, store, model)
    left = remove_guard(st, cfg.model, name)
    console.print(f"guard {name!r} removed from model {cfg.model!r}; guards left: "
                  f"{', '.join(g.name for g in left.guards) or 'none'}")  # fmt: skip
