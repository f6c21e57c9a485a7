"""Command that runs skillgraft as a service: server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from skillgraft.cli.common import ConfigOpt, ModelOpt, StoreOpt, console, fail, load_cfg

app = typer.Typer()

DEFAULT_CRON = "0 2 * * *"  # the same default as deployments/serve.py (not imported: it imports Prefect and torch)


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def serving(api_url: str, model: str) -> bool:
    """True once the retrain deployment of ``model`` and its data-arrived automation exist on the server (an event
    emitted before that starts nothing: the nightly run would be the first to see the data)."""
    try:
        with urllib.request.urlopen(f"{api_url}/deployments/name/retrain/{model}", timeout=5) as r:
            deployment = json.load(r)
        with urllib.request.urlopen(
            f"{api_url}/automations/related-to/prefect.deployment.{deployment['id']}", timeout=5
        ) as r:
            return any(a.get("enabled") for a in json.load(r))
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return False


def port_busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _stop(proc: subprocess.Popen, name: str, first: int, timeout: float) -> int | None:
    """Ask ``proc`` to stop with signal ``first``, then SIGTERM its process group, then SIGKILL it."""
    if proc.poll() is not None:
        return proc.returncode
    for sig, wait in ((first, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            if sig == first:
                proc.send_signal(sig)
            else:
                os.killpg(proc.pid, sig)  # the children too (flow runs, the server's workers)
        except ProcessLookupError:
            break
        try:
            return proc.wait(wait)
        except subprocess.TimeoutExpired:
            console.print(f"{name} did not stop after {signal.Signals(sig).name}; escalating")
    return proc.poll()


@app.command()
def server(
    port: Annotated[int, typer.Option(help="port of the Prefect server and UI")] = 4200,
    host: Annotated[
        str, typer.Option(help="address to listen on (loopback by default: the API has no auth)")
    ] = "127.0.0.1",
    cron: Annotated[
        str, typer.Option(envvar="SKILLGRAFT_RETRAIN_CRON", help="retrain schedule (cron, UTC)")
    ] = DEFAULT_CRON,
    watch_every: Annotated[
        float, typer.Option(envvar="SKILLGRAFT_WATCH_EVERY", help="seconds between landing-zone scans (0: off)")
    ] = 120,
    gpu_slot: Annotated[
        str | None,
        typer.Option(
            envvar="SKILLGRAFT_GPU_SLOT",
            help="concurrency limit the GPU steps take a slot of, e.g. gpu-0 (created with 1 slot if missing)",
        ),
    ] = None,
    model: ModelOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    startup_timeout: Annotated[float, typer.Option(help="seconds to wait for the server to answer")] = 90,
) -> None:
    """Run a local Prefect server (SQLite under PREFECT_HOME) and serve the retrain and watch deployments.

    Prints the UI address; Ctrl-C (or SIGTERM) stops both. A Prefect server already answering on the port is used
    as it is (and left running). Flow runs still in progress when stopped are marked crashed in the UI.
    """
    cfg = load_cfg(config, store=store, model=model)
    if gpu_slot:
        from skillgraft.names import InvalidName, check_name

        try:
            check_name("GPU slot", gpu_slot)
        except InvalidName as e:
            fail(str(e), 2)
    api = f"http://{host}:{port}/api"
    ui = f"http://{host}:{port}"
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)  # the server itself talks to its database, not to an API

    stop = {"signal": None}

    def on_signal(signum, _frame) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server_proc: subprocess.Popen | None = None
    serve_proc: subprocess.Popen | None = None
    log_path = home / "server.log"
    try:
        if healthy(api):
            console.print(f"using the Prefect server already running at {ui}")
        elif port_busy(host, port):
            fail(f"port {port} on {host} is taken by something that is not a Prefect server; pass --port")
        else:
            server_env = {**env, "PREFECT_UI_API_URL": api, "PREFECT_SERVER_API_HOST": host,
                          "PREFECT_SERVER_API_PORT": str(port)}  # fmt: skip
            with open(log_path, "ab") as log:
                server_proc = subprocess.Popen(
                    [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                    env=server_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
                )  # fmt: skip
            console.print(f"starting a Prefect server (database and log under {home}) …")
            deadline = time.monotonic() + startup_timeout
            while not healthy(api):
                if server_proc.poll() is not None or stop["signal"] is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace").splitlines()[-20:]
                    why = (
                        "stopped" if stop["signal"] else f"did not answer at {api}/health within {startup_timeout:.0f}s"
                    )
                    fail(f"the Prefect server {why}; last lines of {log_path}:\n" + "\n".join(tail))
                time.sleep(0.5)
        serve_cmd = [sys.executable, "-m", "deployments.serve", "--cron", cron, "--watch-every", str(watch_every)]
        for flag, value in (("--model", model), ("--store", store), ("--config", config), ("--gpu-slot", gpu_slot)):
            if value:
                serve_cmd += [flag, str(value)]
        serve_env = {**env, "PREFECT_API_URL": api, "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}
        serve_proc = subprocess.Popen(serve_cmd, env=serve_env, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + startup_timeout
        while not serving(api, cfg.model):
            if serve_proc.poll() is not None:
                fail(f"the serve process exited ({serve_proc.returncode}) before its deployments were ready")
            if stop["signal"] is not None:
                break
            if time.monotonic() > deadline:
                fail(f"deployment retrain/{cfg.model} or its trigger did not appear within {startup_timeout:.0f}s")
            time.sleep(0.5)
        if stop["signal"] is None:
            console.print(f"[bold]Prefect UI: {ui}[/]   (API {api}; set PREFECT_API_URL to it for `skillgraft submit`)")
            console.print(f"serving retrain/{cfg.model} (cron '{cron}' UTC, and on skillgraft.data.arrived) and "
                          f"watch/{cfg.model} ({'every ' + format(watch_every, 'g') + ' s' if watch_every > 0 else 'off'}); "
                          "Ctrl-C stops")  # fmt: skip
        while stop["signal"] is None:
            if serve_proc.poll() is not None:
                fail(f"the serve process exited ({serve_proc.returncode}); see its output above")
            if server_proc is not None and server_proc.poll() is not None:
                fail(f"the Prefect server exited ({server_proc.returncode}); see {log_path}")
            time.sleep(0.5)
        console.print("stopping …")
    finally:
        if serve_proc is not None:
            _stop(serve_proc, "the serve process", signal.SIGINT, 20.0)
        if server_proc is not None:
            _stop(server_proc, "the Prefect server", signal.SIGTERM, 20.0)
        for s, handler in previous.items():
            signal.signal(s, handler)
    console.print("stopped")
