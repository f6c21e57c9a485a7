"""skillgraft as a service, against a real Prefect server on loopback.

One ``skillgraft server`` (Prefect server + the served retrain/watch deployments) per test package, on a free port with
its own PREFECT_HOME; the demo model is bootstrapped first through the core steps (seconds), so the triggered retrain
is a short SA Proj run. The server is stopped with SIGTERM at the end, and must exit cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from skillgraft import demo

MODEL = "demo"
CRON = "0 3 * * 1"  # Mondays 03:00: a schedule that can't fire during the test
WATCH_EVERY = 3600
BOOTSTRAP_ROWS = 300
SERVER_STARTUP_S = 120


@dataclass
class Service:
    api: str
    ui: str
    root: Path
    store: Path
    config: Path
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path) -> Path:
    """Small and permissive: the test is about orchestration, so any candidate passes the gate."""
    cfg = {
        "store": str(root / "store"),
        "model": MODEL,
        "base": demo.BASE_SOURCE,
        "train": {"steps": 30, "learning_rate": 1e-3, "batch_size": 16, "log_every": 2, "progress": False},
        "bootstrap_train": {
            "steps": 150,
            "learning_rate": 3e-3,
            "batch_size": 32,
            "schedule": "cosine",
            "progress": False,
        },
        "gate": {"min_gain": 0.0, "max_drop": 1.0},
        "suite": {"max_eval_examples": 32, "probe_prompts": 8, "smoke_examples": 8},
    }
    path = root / "skillgraft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def bootstrap(config: Path, root: Path) -> None:
    """v1 = the demo base taught the old tasks, through the core steps (no Prefect): the champion to retrain."""
    from skillgraft import steps
    from skillgraft.config import load_config
    from skillgraft.data import Intake
    from skillgraft.store import open_store

    cfg = load_config(config)
    store = open_store(cfg.store)
    intake = Intake(store)
    for spec in demo.SPECS.values():
        intake.register_task(spec)
    for task in demo.OLD_TASKS:
        intake.submit(task, demo.write_jsonl(root / f"{task}-0.jsonl", demo.generate(task, BOOTSTRAP_ROWS, seed=0)))
    steps.ensure_model(store, cfg)
    batches = [r.batch for r in intake.ingest() if r.batch is not None]
    cand = steps.train_candidate(store, cfg, batches, bootstrap=True)
    report = steps.evaluate_candidate(store, cfg, cand)
    result = steps.promote(store, cfg, cand, steps.gate(store, cfg, cand, report))
    assert result.promoted and result.champion == "v1", result


def _log_tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def drain_event_workers() -> None:
    """Send what this process's Prefect events workers still hold, and stop them.

    A worker bound to this server's API would otherwise outlive the server, and a later ``prefect_test_harness``
    (tests/test_flow.py) drains every worker on exit — retrying against a closed port for ever.
    """
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from skillgraft.cli.server import healthy, serving

    root = tmp_path_factory.mktemp("service")
    config = write_config(root)
    bootstrap(config, root)

    port = free_port()
    api, ui = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    home = root / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    log = root / "skillgraft-server.log"
    cmd = [sys.executable, "-c", "from skillgraft.cli import main; main()", "server", "--port", str(port),
           "--config", str(config), "--cron", CRON, "--watch-every", str(WATCH_EVERY),
           "--startup-timeout", str(SERVER_STARTUP_S)]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started = False
    try:
        deadline = time.monotonic() + SERVER_STARTUP_S + 30
        while not (healthy(api) and serving(api, MODEL) and "Prefect UI" in log.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`skillgraft server` did not come up (exit {proc.poll()}):\n{_log_tail(log)}")
            time.sleep(0.5)
        started = True
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_HOME: str(home)}):
            yield Service(api=api, ui=ui, root=root, store=root / "store", config=config, log=log)
            drain_event_workers()  # while the server still answers: see drain_event_workers
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"`skillgraft server` did not stop within 60 s of SIGTERM:\n{_log_tail(log)}")
        # only processes of this test's service: its port or its config path is in their command line
        leftovers = [pid for pattern in (f"--port {port}", f"--config {config}")
                     for pid in subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout.split()]  # fmt: skip
        for pid in leftovers:
            os.kill(int(pid), signal.SIGKILL)
    if started:
        assert proc.returncode == 0, f"`skillgraft server` exited {proc.returncode} on SIGTERM:\n{_log_tail(log)}"
        assert not leftovers, f"processes left running after `skillgraft server` stopped: {leftovers}"
        assert not healthy(api, timeout=1), "the Prefect server still answers after `skillgraft server` stopped"


def assert_one_retrain_per_arrival(dep, automations: list, store: Path, config: Path) -> None:
    """``retrain/<model>`` as both the served and the work-pool deployments register it: one run per model at a time
    (later ones wait), the store and config as parameters, and one automation that runs it with the model and task
    of every ``skillgraft.data.arrived`` event for the model."""
    from tasks.events import DATA_ARRIVED

    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
    assert dep.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert dep.parameters == {"model": MODEL, "store": str(store), "config": str(config)}
    [automation] = automations
    assert automation.enabled
    assert automation.trigger.expect == {DATA_ARRIVED}
    assert automation.trigger.match.model_dump() == {"prefect.resource.id": f"skillgraft.model.{MODEL}"}
    [action] = automation.actions
    assert action.type == "run-deployment" and action.deployment_id == dep.id
    assert action.parameters == {"model": "{{ event.payload.model }}", "task": "{{ event.payload.task }}"}


# --- the triggered retrain, shared by the API and browser tests ---


@dataclass
class Triggered:
    key: str
    runs: list  # the flow runs the two announcements started, in start order (prefect FlowRun objects)


def runs_of(deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))


def wait_for_final_runs(deployment: str, count: int, timeout: float, log: Path) -> list:
    """Wait until ``deployment`` has ``count`` flow runs started by events (not its schedule), all finished."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in runs_of(deployment) if r.auto_scheduled is not True]
        if len(runs) >= count and all(r.state is not None and r.state.is_final() for r in runs):
            return sorted(runs, key=lambda r: r.start_time)
        if time.monotonic() > deadline:
            states = [(r.name, r.state.name if r.state else None) for r in runs]
            pytest.fail(f"after {timeout:.0f}s the runs of {deployment} are {states}; server log:\n{_log_tail(log)}")
        time.sleep(1)


def artifacts_of(flow_run_id) -> dict:
    """The keyed artifacts a flow run (or its tasks) created, by key, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


@pytest.fixture(scope="package")
def triggered(service: Service) -> Triggered:
    """New data for the ``count`` task, announced by `submit`'s helper, then at once a second arrival: a stray file
    outside any task folder, as the watcher announces it (task null). Two events, two triggered runs, one at a time:
    whichever starts first trains on the count file and promotes, the other finds nothing left."""
    from flows.watch import announce
    from skillgraft.data import Intake
    from skillgraft.store import LocalStore
    from tasks.arrivals import Arrival, post_event
    from tasks.events import DATA_ARRIVED, model_resource

    store = LocalStore(service.store)
    rows = demo.generate("count", 200, seed=1)
    key = Intake(store).submit("count", demo.write_jsonl(service.root / "count-1.jsonl", rows))
    announce(store, "count", key, MODEL)
    stray = Arrival(
        model=MODEL, task=None, key="incoming/stray.csv", sha16="0" * 16, size=0, store=store.url, source="watch"
    )
    post_event(DATA_ARRIVED, model_resource(MODEL), stray.model_dump(mode="json"))
    runs = wait_for_final_runs(f"retrain/{MODEL}", 2, timeout=240, log=service.log)
    return Triggered(key=key, runs=runs)


def events_of(name: str, model: str, *, at_least: int, timeout: float = 30.0) -> list:
    """Events ``name`` about ``skillgraft.model.<model>``, read back through the API once at least ``at_least`` are
    there (the server stores events asynchronously, a moment after it accepted them)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    query = EventFilter(
        event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[f"skillgraft.model.{model}"])
    )
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(query, limit=50).events  # the client's default, 100, is over the server's max
        if len(events) >= at_least or time.monotonic() > deadline:
            return sorted(events, key=lambda e: e.occurred)
        time.sleep(0.5)
