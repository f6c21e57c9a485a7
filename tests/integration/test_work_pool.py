"""The work-pool path: deployments/prefect.yaml deployed with `prefect deploy` onto a process work pool made from
deployments/work-pools/process.json, and a real `prefect worker` running the retrain that submitted data triggers;
and the docker and kubernetes job templates rendered the way Prefect's workers render them (no server, no Docker, no
cluster).

The slow test starts its own Prefect server (not the package's `skillgraft server`, which serves deployments of the
same names), on a free loopback port with its own PREFECT_HOME.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.workers.base import BaseJobConfiguration
from pydantic import ConfigDict

from skillgraft import demo
from skillgraft.registry import Registry
from skillgraft.store import LocalStore
from tasks.events import DATA_ARRIVED

from .conftest import (
    MODEL,
    _log_tail,
    assert_one_retrain_per_arrival,
    bootstrap,
    drain_event_workers,
    free_port,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
POOLS = ROOT / "deployments" / "work-pools"
POOL = "skillgraft-test"
WORKER = "skillgraft-test-worker"
IMAGE = "skillgraft-worker:latest"
CACHE = "/home/skillgraft/.cache/huggingface"
STARTUP_S = 180  # a Prefect server on a busy 2-core machine: 8 s idle, over 30 s under load
RUN_S = 300  # from `skillgraft submit` to the triggered retrain's final state (≈ 45 s on an idle 2-core machine)


def template(kind: str) -> dict:
    return json.loads((POOLS / f"{kind}.json").read_text())


# --- the job templates, rendered as a worker renders them ---


class _NoClient:
    """The templates reference no block or Prefect variable, so rendering them must not call the API."""

    def __getattr__(self, name: str):
        raise AssertionError(f"rendering the job template called the Prefect API ({name})")


class _JobConfiguration(BaseJobConfiguration):
    """Prefect's base job configuration, keeping the fields a collection's own configuration class would declare."""

    model_config = ConfigDict(extra="allow")


def render(base_job_template: dict, job_variables: dict, cls: type[BaseJobConfiguration] = _JobConfiguration):
    """The job configuration a worker builds for a flow run: the pool's template with its variables' defaults,
    overridden by the deployment's job variables (``BaseJobConfiguration.from_template_and_values``)."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(cls.from_template_and_values(base_job_template, job_variables, client=_NoClient()))


ALL_GPUS = {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}


def test_the_docker_template_requests_every_gpu_by_default_and_the_gpus_a_deployment_names():
    from docker.types import HostConfig  # docker-py: what the docker worker hands container_create_kwargs to

    default = render(template("docker"), {}).model_dump()
    assert default["image"] == IMAGE
    assert default["container_create_kwargs"] == {"device_requests": [ALL_GPUS]}
    assert default["volumes"] == [f"skillgraft_hf-cache:{CACHE}"]  # the compose stack's model cache volume
    engine = HostConfig(version="1.44", device_requests=default["container_create_kwargs"]["device_requests"])
    assert engine["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}  # --gpus all
    ]

    gpu_1 = {"driver": "nvidia", "device_ids": ["1"], "capabilities": [["gpu"]]}
    pinned = render(template("docker"), {"container_create_kwargs": {"device_requests": [gpu_1]},
                                         "env": {"SKILLGRAFT_GPU_SLOT": "gpu-1"}}).model_dump()  # fmt: skip
    engine = HostConfig(version="1.44", device_requests=pinned["container_create_kwargs"]["device_requests"])
    assert engine["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["1"], "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert pinned["env"] == {"SKILLGRAFT_GPU_SLOT": "gpu-1"}
    assert pinned["volumes"] == default["volumes"] and pinned["image"] == IMAGE

    assert render(template("docker"), {"container_create_kwargs": {}}).model_dump()["container_create_kwargs"] == {}


def pod_of(configuration: dict) -> tuple[dict, dict]:
    pod = configuration["job_manifest"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def test_the_kubernetes_template_puts_the_flow_run_on_a_gpu_node_with_the_model_cache_mounted():
    pod, container = pod_of(render(template("kubernetes"), {}).model_dump())
    assert container["image"] == IMAGE
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}  # an integer, as Kubernetes expects
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["volumes"] == [{"name": "model-cache", "persistentVolumeClaim": {"claimName": "skillgraft-model-cache"}}]
    assert container["volumeMounts"] == [{"name": "model-cache", "mountPath": CACHE}]
    assert pod["securityContext"] == {"fsGroup": 10001}  # infra/Dockerfile's user can write the mounted cache

    l4 = {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    taint = {"key": "gpu", "operator": "Equal", "value": "l4", "effect": "NoSchedule"}
    variables = {"gpu_limit": 2, "node_selector": l4, "tolerations": [taint], "model_cache_claim": "hf-cache",
                 "model_cache_path": "/cache", "image": "registry.example/skillgraft:1", "cpu_limit": "8",
                 "env": {"SKILLGRAFT_GPU_SLOT": "gpu-0"}}  # fmt: skip
    configuration = render(template("kubernetes"), variables).model_dump()
    pod, container = pod_of(configuration)
    assert container["resources"]["limits"] == {"cpu": "8", "nvidia.com/gpu": 2}
    assert pod["nodeSelector"] == l4 and pod["tolerations"] == [taint]
    assert pod["volumes"] == [{"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf-cache"}}]
    assert container["volumeMounts"] == [{"name": "model-cache", "mountPath": "/cache"}]
    assert container["image"] == "registry.example/skillgraft:1"
    assert container["env"] == {"SKILLGRAFT_GPU_SLOT": "gpu-0"}
    assert configuration["job_manifest"]["apiVersion"] == "batch/v1" and configuration["namespace"] == "default"

    pod, container = pod_of(
        render(template("kubernetes"), {"gpu_limit": 0, "node_selector": {}, "tolerations": []}).model_dump()
    )
    assert (
        container["resources"]["limits"] == {"nvidia.com/gpu": 0}
        and pod["nodeSelector"] == {}
        and not pod["tolerations"]
    )


def test_the_process_template_is_prefects_default():
    from prefect.workers.process import ProcessWorker

    default = ProcessWorker.get_default_base_job_template()
    ours = template("process")
    assert ours["job_configuration"] == default["job_configuration"]
    assert ours["variables"]["properties"] == default["variables"]["properties"]


def _leaves(tree, path=()) -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, (*path, key)).items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _leaves(sub, (*path, i)).items()}
    return {path: tree}


ADDED = {  # what skillgraft adds to or changes in the collection's default, by template
    "docker": {"variables": set(), "defaults": {"image", "volumes", "container_create_kwargs"}},
    "kubernetes": {"variables": {"gpu_limit", "node_selector", "tolerations", "model_cache_claim", "model_cache_path"},
                   "defaults": {"image"}},
}  # fmt: skip


@pytest.mark.parametrize(
    "kind, module, worker, configuration",
    [("docker", "prefect_docker.worker", "DockerWorker", "DockerWorkerJobConfiguration"),
     ("kubernetes", "prefect_kubernetes.worker", "KubernetesWorker", "KubernetesWorkerJobConfiguration")],
)  # fmt: skip
def test_with_the_collection_installed_the_template_is_its_default_plus_the_gpu_and_cache_settings(
    kind: str, module: str, worker: str, configuration: str
):
    """Runs where prefect-docker / prefect-kubernetes is installed (a worker machine); skipped elsewhere."""
    collection = pytest.importorskip(module, reason=f"{module.split('.')[0]} is not installed")
    default = getattr(collection, worker).get_default_base_job_template()
    ours = template(kind)
    theirs_vars, our_vars = default["variables"]["properties"], ours["variables"]["properties"]
    assert set(our_vars) == set(theirs_vars) | ADDED[kind]["variables"]
    for name, schema in theirs_vars.items():
        changed = {k for k in set(schema) | set(our_vars[name]) if schema.get(k) != our_vars[name].get(k)}
        assert changed <= ({"default", "description"} if name in ADDED[kind]["defaults"] else set()), (name, changed)
    theirs_job, our_job = _leaves(default["job_configuration"]), _leaves(ours["job_configuration"])
    assert {path: our_job.get(path) for path in theirs_job} == theirs_job  # every default setting kept as it was

    # the collection's own configuration class accepts what the template renders
    rendered = render(ours, {"gpu_limit": 1} if kind == "kubernetes" else {}, getattr(collection, configuration))
    if kind == "docker":
        assert rendered.container_create_kwargs == {"device_requests": [ALL_GPUS]}
    else:
        import uuid

        from prefect.client.schemas.objects import FlowRun

        rendered.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="demo-count", flow_id=uuid.uuid4()))
        pod = rendered.job_manifest["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
        assert pod["containers"][0]["args"] == ["prefect", "flow-run", "execute"]


# --- prefect.yaml on a process pool, run by a real worker ---


@dataclass
class Stack:
    api: str
    root: Path
    store: Path
    config: Path
    env: dict
    server_log: Path
    deployed: dict  # deployment name → the deployment as `prefect deploy` registered it (before its schedules paused)


def _run(cmd: list[str], env: dict, timeout: float, what: str) -> str:
    """Run a command to completion without stdin; fail the test with its output when it fails or hangs."""
    try:
        done = subprocess.run(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} did not finish within {timeout:.0f}s:\n{e.stdout or ''}{e.stderr or ''}")
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def _prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def _stop(proc: subprocess.Popen, first: int, wait: float) -> None:
    """Ask ``proc`` to stop with ``first``, then SIGKILL its process group (it was started in its own session)."""
    if proc.poll() is not None:
        return
    proc.send_signal(first)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the flow runs a worker started go with it
    except ProcessLookupError:
        pass
    proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Prefect server, the process pool from its template, and `prefect deploy --all` from prefect.yaml."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from skillgraft.cli.server import healthy

    root = tmp_path_factory.mktemp("work-pool")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = root / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKILLGRAFT_", "PREFECT_"))}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    server_log = root / "server.log"
    with open(server_log, "wb") as out:
        server = subprocess.Popen(_prefect("server", "start", "--host", "127.0.0.1", "--port", str(port)),
                                  env=env | {"PREFECT_UI_API_URL": api}, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        config = write_config(root)
        bootstrap(config, root)  # v1, while the server starts
        deadline = time.monotonic() + STARTUP_S
        while not healthy(api):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Prefect server did not answer within {STARTUP_S}s:\n{_log_tail(server_log)}")
            time.sleep(0.5)
        env |= {"PREFECT_API_URL": api}
        # the documented commands (docs/OPERATIONS.md), from the repository root
        _run(_prefect("work-pool", "create", POOL, "--type", "process", "--base-job-template",
                      str(POOLS / "process.json")), env, 120, "prefect work-pool create")  # fmt: skip
        settings = {"SKILLGRAFT_MODEL": MODEL, "SKILLGRAFT_STORE": str(root / "store"), "SKILLGRAFT_CONFIG": str(config),
                    "SKILLGRAFT_WORK_POOL": POOL, "SKILLGRAFT_CHECKOUT": str(ROOT)}  # fmt: skip
        _run(_prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML)), env | settings, 300,
             "prefect deploy --all")  # fmt: skip
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_HOME: str(home)}):
            with get_client(sync_client=True) as client:
                deployed = {
                    name: client.read_deployment_by_name(name) for name in (f"retrain/{MODEL}", f"watch/{MODEL}")
                }
                # only the trigger may start runs here: the nightly cron could come due during a run at 02:00, and the
                # scan would start every 120 s; pausing a schedule deletes the runs it had scheduled
                for dep in deployed.values():
                    for schedule in dep.schedules:
                        client.update_deployment_schedule(dep.id, schedule.id, active=False)
            yield Stack(api=api, root=root, store=root / "store", config=config, env=env, server_log=server_log,
                        deployed=deployed)  # fmt: skip
            drain_event_workers()  # while the server still answers (see conftest)
    finally:
        _stop(server, signal.SIGTERM, 30)


@pytest.mark.slow
def test_prefect_yaml_deploys_the_retrain_deployment_with_its_schedule_trigger_and_one_run_per_model(stack: Stack):
    from prefect.client.orchestration import get_client

    dep = stack.deployed[f"retrain/{MODEL}"]
    assert dep.work_pool_name == POOL
    assert dep.entrypoint == "flows/retrain.py:retrain"
    assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules] == [("0 2 * * *", "UTC", True)]
    assert set(dep.tags) == {"skillgraft", f"model:{MODEL}"}
    with get_client(sync_client=True) as client:
        automations = client.read_automations_by_name(f"retrain {MODEL} when data arrives")
    assert_one_retrain_per_arrival(dep, automations, stack.store, stack.config)


@pytest.mark.slow
def test_prefect_yaml_deploys_the_watch_deployment_on_an_interval_never_queueing_scans(stack: Stack):
    dep = stack.deployed[f"watch/{MODEL}"]
    assert dep.work_pool_name == POOL and dep.entrypoint == "flows/watch.py:watch"
    assert dep.parameters == stack.deployed[f"retrain/{MODEL}"].parameters
    assert [(s.schedule.interval, s.active) for s in dep.schedules] == [(timedelta(seconds=120), True)]
    assert dep.global_concurrency_limit.limit == 1
    assert dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"


@pytest.mark.slow
def test_the_server_accepts_the_docker_and_kubernetes_templates(stack: Stack):
    """The server checks that every placeholder of a template's job configuration has a variable in its schema."""
    for kind in ("docker", "kubernetes"):
        _run(_prefect("work-pool", "create", f"skillgraft-{kind}", "--type", kind, "--base-job-template",
                      str(POOLS / f"{kind}.json")), stack.env, 120, f"prefect work-pool create --type {kind}")  # fmt: skip
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for kind in ("docker", "kubernetes"):
            pool = client.read_work_pool(f"skillgraft-{kind}")
            assert pool.type == kind and pool.base_job_template == template(kind)


def _worker_events(flow_run_id, timeout: float = 60) -> list:
    """The worker's events about a flow run, once both are in: it submitted the run, and saw its process exit (that
    one comes after the run's final state; the server stores events a moment after accepting them)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    deadline = time.monotonic() + timeout
    while True:
        # a new filter each time: its time window ends when it is made
        query = EventFilter(event=EventNameFilter(prefix=["prefect.worker."]),
                            related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]))  # fmt: skip
        with get_client(sync_client=True) as client:
            events = sorted(client.read_events(query, limit=50).events, key=lambda e: e.occurred)
        if any(e.event == "prefect.worker.executed-flow-run" for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


@pytest.mark.slow
def test_submitted_data_triggers_a_retrain_that_the_worker_runs_and_promotes(stack: Stack):
    from prefect.client.orchestration import get_client

    from .conftest import runs_of

    worker_log = stack.root / "worker.log"
    worker_env = stack.env | {"PREFECT_WORKER_QUERY_SECONDS": "2"}  # poll often: the test waits on the pickup
    with open(worker_log, "wb") as out:
        worker = subprocess.Popen(_prefect("worker", "start", "--pool", POOL, "--name", WORKER), env=worker_env,
                                  cwd=stack.root, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)  # fmt: skip

    def logs() -> str:
        return f"worker log:\n{_log_tail(worker_log, 80)}\nserver log:\n{_log_tail(stack.server_log, 20)}"

    try:
        deadline = time.monotonic() + STARTUP_S
        while f"Worker {WORKER!r} started" not in worker_log.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`prefect worker start` did not start (exit {worker.poll()}):\n{logs()}")
            time.sleep(0.5)

        data = demo.write_jsonl(stack.root / "count-1.jsonl", demo.generate("count", 200, seed=1))
        out = _run([sys.executable, "-c", "from skillgraft.cli import main; main()", "submit", "count", str(data),
                    "--config", str(stack.config)], stack.env, 120, "skillgraft submit")  # fmt: skip
        assert f"{DATA_ARRIVED} for model {MODEL}" in out, out

        deadline = time.monotonic() + RUN_S
        while True:
            runs = runs_of(f"retrain/{MODEL}")
            if runs and all(r.state is not None and r.state.is_final() for r in runs):
                break
            if worker.poll() is not None or time.monotonic() > deadline:
                states = [(r.name, r.state.name if r.state else None) for r in runs]
                pytest.fail(f"after {RUN_S}s (worker exit {worker.poll()}) the retrain runs are {states}:\n{logs()}")
            time.sleep(1)
        events = _worker_events(runs[0].id)  # while the worker still runs: it reports the exit after the final state
    finally:
        _stop(worker, signal.SIGINT, 20)

    [run] = runs  # the trigger's run, and nothing from a schedule
    assert run.state.is_completed() and run.state.name == "Promoted", (run.state, logs())
    assert run.name == f"{MODEL}-count-promoted"
    # the event's model and task, over the deployment's store and config
    assert run.parameters == {"model": MODEL, "task": "count", "store": str(stack.store), "config": str(stack.config)}
    with get_client(sync_client=True) as client:
        [automation] = client.read_automations_by_name(f"retrain {MODEL} when data arrives")
    assert run.created_by.type == "AUTOMATION" and run.created_by.id == automation.id
    # run by the worker, on the pool: it submitted the run as a subprocess and saw it exit 0
    assert run.work_pool_name == POOL and run.infrastructure_pid
    assert [e.event for e in events] == ["prefect.worker.submitted-flow-run", "prefect.worker.executed-flow-run"]
    assert {e.resource.id for e in events} == {f"prefect.worker.process.{WORKER}"}
    [flow_run] = [r for r in events[-1].related if r.role == "flow-run"]
    assert flow_run["prefect.infrastructure.status-code"] == "0"
    assert flow_run["prefect.infrastructure.identifier"] == run.infrastructure_pid
    assert f"Worker {WORKER!r} submitting flow run '{run.id}'" in worker_log.read_text(errors="replace")

    reg = Registry(LocalStore(stack.store), MODEL)
    assert reg.champion().version == "v2" and reg.champion().previous == "v1"
    assert "count" in reg.manifest("v2").tasks
