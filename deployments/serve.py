"""Serve skillgraft's deployments for one model and store: ``retrain/<model>`` and ``watch/<model>``.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.serve --config skillgraft.yaml

(``skillgraft server`` starts a Prefect server and runs this for you.) The process registers both deployments with
the server, then runs their flow runs as subprocesses until stopped (Ctrl-C / SIGTERM; schedules are paused while
nobody serves them, and resumed by the next start).

``retrain/<model>``
    - cron schedule (default nightly, 02:00 UTC; ``--cron`` / ``SKILLGRAFT_RETRAIN_CRON``): retrain on whatever waits
      in the landing zone — a run with nothing new ends quickly as ``no-new-data``;
    - trigger: every ``skillgraft.data.arrived`` event for resource ``skillgraft.model.<model>`` starts a run with
      the event's ``model`` and ``task`` (``skillgraft submit`` and the watcher emit it);
    - at most one run per model at a time, the others wait their turn (concurrency limit 1, ENQUEUE): two runs never
      train the same champion at once, and no arrival is dropped;
    - the store-touching steps retry with back-off (tasks/steps.py); training and scoring are deterministic.

``--gpu-slot NAME`` (env ``SKILLGRAFT_GPU_SLOT``)
    the Prefect global concurrency limit guarding this machine's accelerator (created with ``--gpu-slots`` slots,
    default 1, when missing). The fine-tune and regression-suite steps of every run served here hold one slot while
    they run, so the retrains of several models sharing a GPU take turns (tasks/steps.py: ``accelerator_slot``).

``watch/<model>``
    every ``--watch-every`` seconds (default 120; ``SKILLGRAFT_WATCH_EVERY``), scan the landing zone and announce
    files that arrived without ``skillgraft submit`` (flows/watch.py). A scan still running when the next is due
    makes the next one cancel itself (CANCEL_NEW): scans are never queued up.
"""

from __future__ import annotations

import argparse
import math
import os
from datetime import timedelta
from pathlib import Path

from prefect import serve
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from flows.retrain import retrain
from flows.watch import watch
from skillgraft.config import SkillgraftConfig, load_config
from skillgraft.names import InvalidName, check_name
from tasks.events import DATA_ARRIVED
from tasks.steps import GPU_SLOT_ENV

DEFAULT_CRON = "0 2 * * *"  # nightly at 02:00
DEFAULT_TIMEZONE = "UTC"
DEFAULT_WATCH_SECONDS = 120


def data_arrived_trigger(model: str) -> DeploymentEventTrigger:
    """Run the deployment on each ``skillgraft.data.arrived`` for this model, with the event's model and task."""
    return DeploymentEventTrigger(
        name=f"retrain {model} when data arrives",
        expect={DATA_ARRIVED},
        match={"prefect.resource.id": f"skillgraft.model.{model}"},
        # single-expression templates keep the value's JSON type: a file outside a valid task folder is announced with
        # task null, which becomes task=None (ingest every task folder; the stray file goes to quarantine, explained)
        parameters={"model": "{{ event.payload.model }}", "task": "{{ event.payload.task }}"},
    )


def resolve(config: str | None, store: str | None, model: str | None) -> tuple[SkillgraftConfig, str | None]:
    """The config as the flow runs will load it, and its absolute path (flow runs may start in another directory).

    A local store path is made absolute too; ``./skillgraft.yaml`` is used when present and no config is named.
    """
    path = (
        config
        or os.environ.get("SKILLGRAFT_CONFIG")
        or ("skillgraft.yaml" if Path("skillgraft.yaml").is_file() else None)
    )
    cfg = load_config(path, store=store, model=model)
    if "://" not in cfg.store:
        cfg.store = str(Path(cfg.store).expanduser().resolve())
    return cfg, str(Path(path).resolve()) if path else None


def retrain_deployment(cfg: SkillgraftConfig, config: str | None, cron: str = DEFAULT_CRON,
                       timezone: str = DEFAULT_TIMEZONE) -> RunnerDeployment:  # fmt: skip
    return retrain.to_deployment(
        name=cfg.model,
        schedules=[Cron(cron, timezone=timezone)],
        triggers=[data_arrived_trigger(cfg.model)],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        parameters={"model": cfg.model, "store": cfg.store, "config": config},
        description=f"Retrain {cfg.model} on new data in {cfg.store}: on a schedule ({cron} {timezone}) and on "
        f"each {DATA_ARRIVED} event; one run at a time.",
        tags=["skillgraft", f"model:{cfg.model}"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def watch_deployment(
    cfg: SkillgraftConfig, config: str | None, every: float = DEFAULT_WATCH_SECONDS
) -> RunnerDeployment:
    # keep ~10 minutes of scans scheduled ahead, not Prefect's default 100 runs (they would crowd the UI's run list)
    schedule = DeploymentScheduleCreate(schedule=IntervalSchedule(interval=timedelta(seconds=every)),
                                        max_scheduled_runs=max(3, math.ceil(600 / every)))  # fmt: skip
    return watch.to_deployment(
        name=cfg.model,
        schedules=[schedule],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        parameters={"model": cfg.model, "store": cfg.store, "config": config},
        description=f"Announce files that land in {cfg.store}/incoming/ without `skillgraft submit`.",
        tags=["skillgraft", f"model:{cfg.model}"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def crash_interrupted_runs(names: list[str]) -> list[str]:
    """Mark the runs of these deployments still Running or Pending as Crashed; returns their names.

    Called when the serve process stops: its flow runs are its subprocesses and end with it, but nothing else tells
    the server, so they would show as Running forever (and a retrain would keep holding its model's concurrency slot,
    blocking every later run). Assumes one serve process per model, as ``skillgraft server`` runs it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    crashed = []
    with get_client(sync_client=True) as client:
        ids = [client.read_deployment_by_name(name).id for name in names]
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids)),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PENDING]))),
        )  # fmt: skip
        for run in runs:
            message = "the serve process stopped during this run (skillgraft server was stopped); retrigger it"
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            client.update_flow_run(run.id, name=f"{run.name}-crashed")  # its own hook died with it
            crashed.append(run.name)
    return crashed


def _slot_name(value: str) -> str:
    try:
        return check_name("GPU slot", value)
    except InvalidName as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="skillgraft.yaml (default: $SKILLGRAFT_CONFIG, or ./skillgraft.yaml if present)")
    p.add_argument("--store", help="store URL (overrides the config; env SKILLGRAFT_STORE)")
    p.add_argument("--model", help="model name (overrides the config; env SKILLGRAFT_MODEL)")
    p.add_argument("--cron", default=os.environ.get("SKILLGRAFT_RETRAIN_CRON", DEFAULT_CRON),
                   help=f"retrain schedule (default {DEFAULT_CRON!r}: nightly)")  # fmt: skip
    p.add_argument("--timezone", default=os.environ.get("SKILLGRAFT_RETRAIN_TIMEZONE", DEFAULT_TIMEZONE))
    p.add_argument("--gpu-slot", default=os.environ.get(GPU_SLOT_ENV) or None, type=_slot_name,
                   help="global concurrency limit the GPU steps take a slot of (e.g. gpu-0); default: none")  # fmt: skip
    p.add_argument("--gpu-slots", type=int, default=1, help="slots of --gpu-slot when it has to be created")
    p.add_argument("--watch-every", type=float, default=float(os.environ.get("SKILLGRAFT_WATCH_EVERY", DEFAULT_WATCH_SECONDS)),
                   help="seconds between landing-zone scans; 0 turns the watcher off")  # fmt: skip
    return p.parse_args(argv)


def ensure_gpu_slot(name: str, slots: int = 1) -> int:
    """Create the global concurrency limit ``name`` with ``slots`` slots unless it exists; returns its limit. The
    flow runs served from this process inherit ``SKILLGRAFT_GPU_SLOT=name``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    check_name("GPU slot", name)
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
            limit = slots
    os.environ[GPU_SLOT_ENV] = name
    return limit


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg, config = resolve(args.config, args.store, args.model)
    if args.gpu_slot:
        slots = ensure_gpu_slot(args.gpu_slot, args.gpu_slots)
        print(f"GPU steps take one of {slots} slot(s) of concurrency limit {args.gpu_slot!r}")
    deployments = [retrain_deployment(cfg, config, args.cron, args.timezone)]
    if args.watch_every > 0:
        deployments.append(watch_deployment(cfg, config, args.watch_every))
    try:
        serve(*deployments)
    finally:
        if crashed := crash_interrupted_runs([f"{d.flow_name}/{d.name}" for d in deployments]):
            print(f"marked as crashed (interrupted by the shutdown): {', '.join(crashed)}")


if __name__ == "__main__":
    main()
