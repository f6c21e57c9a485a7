"""Commands on the registry: status, history, rollback, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from skillgraft.cli.common import ConfigOpt, ModelOpt, StoreOpt, console, fail, load_cfg

app = typer.Typer()

@app.command()
def status(model: ModelOpt = None, store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """The champion and every stored version, with incomplete or corrupt ones flagged."""
    from skillgraft.registry import Registry
    from skillgraft.store import open_store

    cfg = load_cfg(config, store=store, model=model)
    reg = Registry(open_store(cfg.store), cfg.model)
    info = reg.info()
    if info is None:
        fail(f"model {cfg.model!r} is not registered in {cfg.store}")
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

    cfg = load_cfg(config, store=store, model=model)
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

    cfg = load_cfg(config, store=store, model=model)
    reg = Registry(open_store(cfg.store), cfg.model)
    before = reg.champion()
    try:
        pointer = reg.rollback(version, reason=reason)
    except RegistryError as e:
        fail(str(e))
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

    cfg = load_cfg(config, store=store, model=model)
    path = do_export(open_store(cfg.store), cfg.model, version, out)
    console.print(f"wrote {path}")
