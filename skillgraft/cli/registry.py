"""Commands on the registry: status, history, promote, rollback, check, repair, export.

Exit codes (the same for every command here, so scripts can branch on them):

====  =========================================================================================================
0     done
1     not found or unreachable: unknown model or version, no champion, nothing to roll back, a store error,
      no adapter to export (``export --format adapter`` of a version not trained with lora)
2     usage: a bad option, name or config file (typer / the config loader)
3     refused by the gate: no stored decision, a ``reject`` decision, or one made against another champion
      (``promote --force`` overrides and is recorded in the history)
4     conflict: the champion moved while this command ran; nothing was changed
5     the version (or, for ``status``, the champion or the base snapshot) is incomplete or corrupt, or the
      champion pointer is missing although the history records champions (``skillgraft repair``)
6     promoted, but the post-promotion check failed (rolled back automatically when there was a champion before)
====  =========================================================================================================

Only the store's URL (``s3://bucket/prefix`` or a directory) and the S3 endpoint without any user-info part are
printed; credentials come from the AWS chain and never appear in output or errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from skillgraft import layout
from skillgraft.cli.common import ConfigOpt, ModelOpt, StoreOpt, console, fail, load_cfg

if TYPE_CHECKING:
    from skillgraft.config import SkillgraftConfig
    from skillgraft.registry import ChampionPointer, Registry
    from skillgraft.store import ObjectStore

app = typer.Typer()

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_CONFLICT = 4
EXIT_INVALID = 5
EXIT_CHECK_FAILED = 6

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the registry's and the store's errors into one line on stderr and an exit code (see the module doc)."""
    from skillgraft.names import InvalidName
    from skillgraft.registry import (
        ChampionMissing,
        PromotionConflict,
        PromotionRefused,
        RegistryError,
        VersionNotFound,
        VersionNotValid,
    )
    from skillgraft.store import StoreError

    try:
        yield
    except PromotionConflict as e:
        fail(str(e), EXIT_CONFLICT)
    except PromotionRefused as e:
        fail(f"{e} (on the command line: --force)", EXIT_REFUSED)
    except ChampionMissing as e:
        fail(str(e), EXIT_INVALID)
    except VersionNotFound as e:
        fail(str(e), EXIT_NOT_FOUND)
    except VersionNotValid as e:
        fail(str(e), EXIT_INVALID)
    except RegistryError as e:  # ModelNotFound, NoChampion, NoPreviousChampion, already champion...
        fail(str(e), EXIT_NOT_FOUND)
    except InvalidName as e:
        fail(str(e), EXIT_USAGE)
    except StoreError as e:  # unreachable endpoint, credentials refused, missing bucket: messages never hold secrets
        fail(str(e), EXIT_NOT_FOUND)


def _open(config: Path | None, store: str | None, model: str | None) -> tuple[SkillgraftConfig, ObjectStore, Registry]:
    """Config, store and the model's registry; the model must be registered (exit 1 otherwise)."""
    from skillgraft.registry import ModelNotFound, Registry
    from skillgraft.store import open_store

    cfg = load_cfg(config, store=store, model=model)
    with _errors():
        st = open_store(cfg.store)
        reg = Registry(st, cfg.model)
        if reg.info() is None:
            raise ModelNotFound(
                f"model {cfg.model!r} is not registered in {_where(st)}: check --model / --store (or "
                f"SKILLGRAFT_MODEL / SKILLGRAFT_STORE); `skillgraft run` or `skillgraft demo` registers one"
            )
    return cfg, st, reg


def _where(store: ObjectStore) -> str:
    endpoint = getattr(store, "endpoint", None)
    return f"{store.url} (endpoint {endpoint})" if endpoint else store.url


def _show(pointer: ChampionPointer | None) -> str:
    return pointer.version if pointer else "none"


# --- status ---------------------------------------------------------------------------------------------------------


@app.command()
def status(
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="check every file's sha256 (reads every version's files)")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """The champion and every stored version; incomplete and corrupt ones are flagged with the reason.

    Exits 5 when the champion itself is not a complete, valid version, when the base snapshot is corrupt, or when
    the champion pointer is missing although the history records champions (then `skillgraft repair`); incomplete
    or corrupt other versions are reported but leave the exit code at 0 (an incomplete version may be a writer still
    at work). Versions that were never gated and a champion never checked after its promotion are reported too.
    """
    cfg, st, reg = _open(config, store, model)
    with _errors():
        info = reg.info()
        assert info is not None  # _open checked
        pointer = reg.champion()
        entries = reg.history()
        rows = reg.versions(verify=verify)
        gap = reg.unlogged_move(pointer, entries)
        lost = reg.lost_champion(entries) if pointer is None else None
        unchecked = reg.unchecked_champion(pointer, entries)
        base_problems = _base_problems(reg, info, verify)
    champion_row = next((r for r in rows if pointer and r.version == pointer.version), None)
    champion_problem = fix = None
    if base_problems:
        champion_problem = f"the base snapshot of {cfg.model} is corrupt, so no version can be loaded: " + "; ".join(
            base_problems
        )
        fix = f"restore {layout.base_prefix(cfg.model)} from the store's versioning or a backup"
    elif lost is not None:
        champion_problem = (f"{layout.CHAMPION} is missing, but the history records champions (the last: {lost.action} "
                            f"of {lost.version} at {lost.at}): the pointer was deleted or lost, so nothing may train, "
                            f"promote or roll back")  # fmt: skip
        fix = f"rebuild it from the history with `skillgraft repair` (champion {lost.version}), or `skillgraft repair VERSION`"
    elif pointer is not None and champion_row is None:
        champion_problem = f"champion {pointer.version} has no files in the store"
    elif champion_row is not None and champion_row.status != "complete":
        champion_problem = f"champion {pointer.version} is {champion_row.status}: " + "; ".join(champion_row.problems)
    attention = [r for r in rows if r.status != "complete"]
    ungated = [r for r in rows if r.status == "complete" and not r.gated]

    if as_json:
        doc = {
            "model": cfg.model,
            "store": st.url,
            "base": info.base.model_dump(mode="json"),
            "champion": pointer.model_dump(mode="json") if pointer else None,
            "champion_ok": pointer is not None and champion_problem is None,
            "champion_problem": champion_problem,
            "champion_missing": lost.model_dump(mode="json", by_alias=True, exclude_unset=True) if lost else None,
            "champion_unchecked": unchecked is not None,
            "base_problems": base_problems,
            "ungated": [r.version for r in ungated],
            "unlogged_move": gap.model_dump(mode="json", by_alias=True) if gap else None,
            "verified": verify,
            "versions": [r.model_dump(mode="json") for r in rows],
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        console.print(f"model [bold]{escape(cfg.model)}[/] in {escape(_where(st))}")
        console.print(f"base {escape(info.base.source)} (sha256 {info.base.sha256[:12]}…)")
        since = f" since {pointer.since} by {escape(pointer.actor)}: {escape(pointer.reason)}" if pointer else ""
        shown = f"MISSING ({layout.CHAMPION} deleted or lost)" if lost is not None else _show(pointer)
        console.print(f"champion: [bold]{shown}[/]{since}", soft_wrap=True)
        table = Table()
        for col in ("version", "status", "parent", "recipe", "tasks", "last action", "created"):
            table.add_column(col)
        for v in rows:
            color = {"complete": "green", "incomplete": "yellow", "corrupt": "red"}[v.status]
            name = f"{v.version} *" if v.champion else v.version
            parent = v.parent or ("base" if v.recipe is not None else "?")  # no readable manifest: unknown
            table.add_row(name, f"[{color}]{v.status}[/]", parent, v.recipe or "", ", ".join(v.tasks),
                          v.last_action or "", v.created_at or "")  # fmt: skip
        console.print(table)
        if not verify:
            console.print("checksums not verified (--no-verify): only missing files and manifests are detected")
        for v in attention:
            for problem in v.problems:
                console.print(f"[yellow]{v.version} {v.status}:[/] {escape(problem)}", soft_wrap=True)
        for v in ungated:
            console.print(
                f"[yellow]{v.version} ungated:[/] complete, but never gated (no decision, nothing in the history): its "
                f"run stopped before the gate. It is not promotable as it is; the next `skillgraft run` trains on its "
                f"data again", soft_wrap=True,
            )  # fmt: skip
        if unchecked is not None:
            console.print(
                f"[yellow]champion {unchecked.version} was never checked after promotion[/] (its promoter stopped "
                f"before the post-promotion check): run `skillgraft check` (the next `skillgraft run` does it first)",
                soft_wrap=True,
            )
        if gap is not None:
            console.print(
                f"[yellow]history:[/] the {gap.action} of {gap.version} at {gap.at} is not in the history log (its "
                f"writer stopped after moving the pointer, or is logging it right now); the next promote or rollback "
                f"records it",
                soft_wrap=True,
            )
    if champion_problem:
        fail(f"{champion_problem}; {fix or 'roll back with `skillgraft rollback`'}", EXIT_INVALID)


def _base_problems(reg: Registry, info, verify: bool) -> list[str]:
    """The base snapshot's problems: against the file list recorded at registration; for a model registered before
    that list existed (``verify`` only), by loading the snapshot and comparing its hash."""
    problems = reg.base_problems(verify=verify, info=info)
    if problems or not verify or not info.base.snapshot or info.base_files is not None:
        return problems
    from skillgraft import steps

    try:
        steps.load_base(reg)
    except Exception as e:  # noqa: BLE001 - any failure to load the base is the finding
        return [f"{layout.base_prefix(reg.model)} can't be loaded back: {e}"]
    return []


# --- history --------------------------------------------------------------------------------------------------------


@app.command()
def history(
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="only the last N entries")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every promotion, rejection and rollback: who, when, why (forced promotions are marked)."""
    cfg, _st, reg = _open(config, store, model)
    with _errors():
        entries = reg.history()
    if limit is not None:
        entries = entries[-limit:]
    if as_json:
        for h in entries:
            typer.echo(h.model_dump_json(by_alias=True, exclude_unset=True))
        return
    if not entries:
        console.print(f"no history yet for {escape(cfg.model)}")
        return
    for h in entries:  # one line per entry (reasons are long; a table folds them), newest last
        action = f"{h.action} (forced)" if h.forced else h.action
        move = (
            f"{h.from_version or 'none'} → {h.version}" if h.action in ("promote", "rollback", "repair") else h.version
        )
        late = " [dim](logged late)[/]" if (h.model_extra or {}).get("recovered") else ""
        console.print(
            f"{h.at}  [bold]{action}[/] {move}  by {escape(h.actor)}: {escape(h.reason)}{late}", soft_wrap=True
        )


# --- promote --------------------------------------------------------------------------------------------------------


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="the version to make champion")],
    force: Annotated[bool, typer.Option("--force", help="promote even if the gate did not pass it (recorded)")] = False,
    reason: Annotated[str, typer.Option(help="why, recorded in the history")] = "manual promotion",
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="load the new champion back and run the smoke evaluation; roll back automatically if it fails",
        ),
    ] = True,
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Make VERSION the champion, through the same gate as the retrain flow unless --force.

    The version must be complete with every checksum valid (its parents too), even with --force. Without --force its
    stored decision must say promote and must have been made against the current champion. Afterwards the champion
    is loaded back from the store and smoke-tested, and rolled back on failure (--no-check skips this).
    """
    from skillgraft import steps
    from skillgraft.promotion import PromotionResult, gate_refusal, promote_checked

    cfg, st, reg = _open(config, store, model)
    with _errors():
        reg.manifest(version)  # unknown (exit 1) or incomplete / unreadable (exit 5) before any gate message
        current, etag = reg.champion_with_etag()
        if current is not None and current.version == version:
            fail(f"{version} is already the champion of {cfg.model}; nothing was changed", EXIT_NOT_FOUND)
        refusal = gate_refusal(reg, version, current)
        if refusal and not force:
            fail(f"refusing to promote {version}: {refusal}. Pass --force to promote it anyway (recorded in the "
                 f"history as forced); nothing was changed", EXIT_REFUSED)  # fmt: skip
    why = f"{reason}; forced past the gate: {refusal}" if refusal else f"{reason}; gate decision: promote"

    def move() -> PromotionResult:
        with _errors():
            pointer = reg.promote(version, reason=why, expected_etag=etag, force=force)
        console.print(f"champion of {escape(cfg.model)}: {_show(current)} → [bold]{pointer.version}[/]"
                      + (" (forced)" if force else ""))  # fmt: skip
        return PromotionResult(promoted=True, champion=pointer.version, previous=pointer.previous, reason=why)

    settled = promote_checked(version, move, _checker(cfg, st) if check else None, _rollbacker(cfg, st))
    if not check:
        with _errors():
            steps.record_check(st, cfg, steps.CheckResult(ok=True, version=version, scores={},
                                                          reasons=["skipped: promoted with --no-check"]), skipped=True)  # fmt: skip
        return
    _report_settled(settled)


def _checker(cfg: SkillgraftConfig, st: ObjectStore):
    """The post-promotion check as the CLI runs it: smoke-tested against the gate's scores when the version has them
    (a forced promotion of a version the gate never scored is only loaded back), recorded in the history."""
    from skillgraft import steps

    def check(version: str, _previous: str | None):
        result = steps.check_champion(st, cfg, version)
        with _errors():
            steps.record_check(st, cfg, result)
        return result

    return check


def _rollbacker(cfg: SkillgraftConfig, st: ObjectStore):
    from skillgraft import steps

    def rollback(result, to: str) -> str:  # a PromotionConflict goes up to settle(): the newer promotion stands
        return steps.auto_rollback(st, cfg, result, to).version

    return rollback


def _report_settled(settled) -> None:
    """One line for how the check ended; exit 6 (EXIT_CHECK_FAILED) unless it passed."""
    version, result = settled.version, settled.check
    reasons = "; ".join(result.reasons)
    if settled.status == "promoted":
        note = "" if result.smoke else " (no gate scores to compare with: load-back only)"
        console.print(f"post-promotion check passed{note}: {escape(reasons)}", soft_wrap=True)
        return
    if settled.status == "check-failed":
        fail(f"post-promotion check of {version} failed: {reasons}. There is no earlier champion to roll back to: "
             f"{version} stays champion; fix or promote another version", EXIT_CHECK_FAILED)  # fmt: skip
    if settled.status == "rollback-skipped":
        fail(f"post-promotion check of {version} failed ({reasons}), but the champion moved meanwhile, so it was "
             f"not rolled back: {settled.notes[-1].removeprefix('not rolled back: ')}", EXIT_CHECK_FAILED)  # fmt: skip
    fail(f"post-promotion check of {version} failed: {reasons}. Rolled back automatically: champion is "
         f"{settled.champion} again; nothing was deleted", EXIT_CHECK_FAILED)  # fmt: skip


# --- rollback -------------------------------------------------------------------------------------------------------


@app.command()
def rollback(
    version: Annotated[
        str | None, typer.Argument(help="former champion to restore (default: the previous one)")
    ] = None,
    reason: Annotated[str, typer.Option(help="why, recorded in the history")] = "manual rollback",
    force: Annotated[
        bool, typer.Option("--force", help="roll back to a version that was champion only through --force (recorded)")
    ] = False,
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Move the champion back to VERSION, or to the champion before the current one.

    Only former champions are rollback targets, and only when complete and valid (parents too); repeated rollbacks
    walk back down the chain of champions. A version that was champion only through a forced promotion needs
    --force again (recorded as forced).
    """
    cfg, _st, reg = _open(config, store, model)
    with _errors():
        before = reg.require_champion()
        pointer = reg.rollback(version, reason=reason, force=force)
    console.print(f"champion of {escape(cfg.model)}: {before.version} → [bold]{pointer.version}[/]"
                  + (" (forced)" if pointer.forced else ""))  # fmt: skip


# --- check and repair -----------------------------------------------------------------------------------------------


@app.command()
def check(
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run the post-promotion check on the champion now (load it back, smoke-test it against the gate's scores) and
    record it; roll back automatically when it fails. For a champion whose promoter stopped before checking it
    (`status` says "never checked after promotion"); the next `skillgraft run` does the same first."""
    cfg, st, reg = _open(config, store, model)
    with _errors():
        pointer = reg.require_champion()
        previous = pointer.previous if pointer.action == "promote" else None
    from skillgraft.promotion import settle

    console.print(f"checking champion {pointer.version} of {escape(cfg.model)}")
    _report_settled(settle(pointer.version, previous, _checker(cfg, st), _rollbacker(cfg, st)))


@app.command()
def repair(
    version: Annotated[
        str | None, typer.Argument(help="former champion to restore (default: the last champion in the history)")
    ] = None,
    reason: Annotated[str, typer.Option(help="why, recorded in the history")] = "manual repair",
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Rebuild a missing champion pointer (champion.json) from the history: the champion it last recorded, or
    VERSION, a former champion. Checksums of the version and its parents are verified first; the repair is recorded
    in the history. Refused when the pointer is present or the history records no champion."""
    cfg, _st, reg = _open(config, store, model)
    with _errors():
        pointer = reg.repair(version, reason=reason)
    console.print(f"champion of {escape(cfg.model)} restored from the history: [bold]{pointer.version}[/] "
                  f"(previous {pointer.previous or 'none'}); recorded as a repair")  # fmt: skip


# --- export ---------------------------------------------------------------------------------------------------------


class ExportFormat(StrEnum):
    merged = "merged"
    adapter = "adapter"


@app.command()
def export(
    version: Annotated[str | None, typer.Argument(help="version (default: the champion)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory to create (must not exist, or be empty)")] = ...,
    format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            "-f",
            help="merged: the full weights (base + delta chain); adapter: a lora version's PEFT adapter, to load "
            "with PeftModel.from_pretrained on its parent's weights",
        ),
    ] = ExportFormat.merged,
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a version for serving: a full Hugging Face model directory (config, model.safetensors, tokenizer), or
    with --format adapter a lora version's PEFT adapter (adapter_config.json, adapter_model.safetensors).

    Every file read is checked against its manifest. The directory appears whole or not at all, with README.md (a
    model card the Hugging Face hub reads: base model, tags, the gate's scores) and skillgraft.json (the model,
    version, chain, lineage and each file's sha256). Exits 1 when the version has no adapter.
    """
    from skillgraft import steps

    cfg, st, _reg = _open(config, store, model)
    with _errors():
        try:
            path = steps.export(st, cfg.model, version, out, format=format.value)
        except FileExistsError as e:
            fail(str(e), EXIT_USAGE)
    console.print(f"wrote {escape(str(path))} ({format.value})")


@app.command()
def forgetting(
    version: Annotated[str | None, typer.Argument(help="last version of the lineage (default: the champion)")] = None,
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Forgetting across the lineage: accuracy matrix R[i][j], average accuracy, backward transfer, forgetting."""
    from skillgraft.forgetting import load_matrix, summarize
    from skillgraft.registry import Registry, RegistryError
    from skillgraft.store import open_store

    cfg = load_cfg(config, store=store, model=model)
    try:
        matrix = load_matrix(Registry(open_store(cfg.store), cfg.model), version)
    except (RegistryError, LookupError) as e:
        fail(str(e))
    console.print(summarize(matrix).markdown())
