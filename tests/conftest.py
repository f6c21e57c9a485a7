"""Shared pytest fixtures, one section per topic (each starts with a `# --- <topic> fixtures ---` header)."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# --- test distribution ---
# `make test` runs two pytest-xdist workers. Each module stays on one worker, so its module-scoped fixtures (a
# pretrained base, a Prefect test server) are built once; tests/integration shares one package-scoped
# `skillgraft server`, so the whole package goes to one worker as one unit. Without xdist this does nothing.


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: without the plugin, nothing to do
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # pytest-xdist's hook: pick the scheduler
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/integration" if path.startswith("tests/integration/") else path

    return ByModule(config, log)


# --- store fixtures ---
# `store` runs a test on both backends: a LocalStore in tmp_path, and an S3Store against moto's S3 HTTP API on
# 127.0.0.1 (one server per session, a fresh bucket per test, keys under a non-empty prefix).

_DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/skillgraft-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/skillgraft-test-aws-credentials",
}
_UNSET_AWS_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "SKILLGRAFT_S3_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
S3_TEST_PREFIX = "team/skillgraft"


def _serialize_moto_put_object(mp: pytest.MonkeyPatch) -> None:
    """moto checks If-Match / If-None-Match and then writes without a lock, so two racing conditional PUTs can both
    succeed (seen about once in 200 races); S3 itself decides atomically. Serialize moto's PutObject handler so the
    race tests exercise our client logic against a server that keeps S3's promise."""
    from moto.s3.responses import S3Response

    original = S3Response.put_object
    lock = threading.Lock()

    @functools.wraps(original)
    def put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    mp.setattr(S3Response, "put_object", put_object)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a real S3 HTTP API (moto) on loopback, with dummy AWS credentials in the environment."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in _DUMMY_AWS_ENV.items():
            mp.setenv(name, value)
        for name in _UNSET_AWS_ENV:
            mp.delenv(name, raising=False)
        _serialize_moto_put_object(mp)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 5}),
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"sg-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_client: Any, s3_bucket: str) -> Any:
    from skillgraft.store.s3 import S3Store

    return S3Store(s3_bucket, S3_TEST_PREFIX, client=s3_client)


@pytest.fixture
def local_store(tmp_path: Any) -> Any:
    from skillgraft.store.local import LocalStore

    return LocalStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> Any:
    """An empty ObjectStore; the test runs once per backend."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def store_url(request: pytest.FixtureRequest, store: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL `open_store` / `--store` takes for ``store``; for S3 the endpoint is put in SKILLGRAFT_S3_ENDPOINT_URL."""
    from skillgraft.store.s3 import S3Store

    if isinstance(store, S3Store):
        monkeypatch.setenv("SKILLGRAFT_S3_ENDPOINT_URL", request.getfixturevalue("s3_endpoint"))
        return store.url
    return str(store.root)


# Registries holding the built-in demo model: its base snapshot and a chain of real deltas (a few self-attention
# tensors changed per version, whole tensors as train_candidate stores them), plus one small accepted demo task for the
# post-promotion smoke check. Built once per session (no training); `demo_registry(store)` copies it into a store.


@dataclass
class DemoVersion:
    delta: bytes
    metrics: bytes  # a RegressionReport with the version's real scores on the demo task's eval split
    scores: dict[str, float]


@dataclass
class DemoChain:
    base: Any  # BaseRef
    base_files: dict[str, bytes]
    task_objects: dict[str, bytes]  # every key under tasks/ of a store where the demo task was accepted
    tasks: list[str]
    versions: list[DemoVersion]  # versions[i] is v{i+1}, a delta on v{i}


DEMO_CHAIN_LENGTH = 4


@pytest.fixture(scope="session")
def demo_chain(tmp_path_factory: pytest.TempPathFactory) -> DemoChain:
    import torch

    from skillgraft import demo, layout, steps
    from skillgraft.config import SkillgraftConfig
    from skillgraft.data import Intake
    from skillgraft.evaluate import RegressionReport, SuiteRow, score_task
    from skillgraft.models import delta_to_bytes, extract_delta
    from skillgraft.registry import Registry
    from skillgraft.store.local import LocalStore

    root = tmp_path_factory.mktemp("demo-chain")
    src = LocalStore(root)
    base = steps.ensure_model(src, SkillgraftConfig(store=str(root)))
    intake = Intake(src)
    intake.register_task(demo.SPECS["first"])
    intake.accept_examples("first", demo.generate("first", 40, seed=7), "first-0.jsonl")
    tasks = ["first"]
    reg = Registry(src, demo.MODEL_NAME)
    loaded = steps.load_version(reg, None)
    suite = steps.suite_tasks(src, tasks, [], None)
    names = [n for n in loaded.model.state_dict() if ".self_attn." in n and n.endswith("_proj.weight")]
    generator = torch.Generator().manual_seed(0)
    versions = []
    for i in range(DEMO_CHAIN_LENGTH):
        before = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
        with torch.no_grad():
            for name in names[2 * i : 2 * i + 2]:
                tensor = loaded.model.state_dict()[name]
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.01)
        delta = extract_delta(before, loaded.model.state_dict())
        scored = {t.name: score_task(loaded.model, loaded.tokenizer, t) for t in suite}
        report = RegressionReport(
            champion=f"v{i}" if i else "base", candidate=f"v{i + 1}",
            rows=[SuiteRow(task=n, new=False, metric=s.metric, n=s.n, champion=s.score, candidate=s.score) for n, s in scored.items()],
            candidate_scores=scored,
        )  # fmt: skip
        versions.append(
            DemoVersion(
                delta=delta_to_bytes(delta, {"parent": f"v{i}" if i else "base", "recipe": "sa_proj"}),
                metrics=report.model_dump_json().encode(),
                scores={n: s.score for n, s in scored.items()},
            )
        )
    prefix = layout.base_prefix(demo.MODEL_NAME)
    return DemoChain(
        base=base,
        base_files={k[len(prefix) :]: src.get(k) for k in src.keys(prefix)},
        task_objects={k: src.get(k) for k in src.keys(layout.TASKS_PREFIX)},
        tasks=tasks,
        versions=versions,
    )


def demo_decision(version: str, champion: str, promote: bool = True) -> bytes:
    """A stored gate decision for ``version`` against ``champion`` (a version id or 'base')."""
    from skillgraft.gate import Decision, GatePolicy

    reasons = ["ok new task 'first': within limits"] if promote else ["FAIL old task 'first': regressed"]
    return (
        Decision(promote=promote, reasons=reasons, champion=champion, candidate=version, policy=GatePolicy())
        .model_dump_json()
        .encode()
    )


@pytest.fixture
def demo_registry(demo_chain: DemoChain) -> Callable[..., Any]:
    """``demo_registry(store, versions=3, champion="v1", gated=True)``: the demo model registered in ``store`` with
    ``versions`` complete versions (v1 on the base, each next on the previous), each with metrics.json and (``gated``)
    a decision.json saying promote against its parent; ``champion`` promoted (via the chain of champions up to it)."""
    from skillgraft import demo, layout
    from skillgraft.refs import Manifest
    from skillgraft.registry import Registry

    def build(store: Any, versions: int = 3, champion: str | None = "v1", gated: bool = True) -> Registry:
        reg = Registry(store, demo.MODEL_NAME, actor="tester@ci")
        for name, data in demo_chain.base_files.items():
            reg.put_base_file(name, data)
        reg.init(demo_chain.base)
        for key, data in demo_chain.task_objects.items():
            store.put_new(key, data)
        for i in range(versions):
            parent = f"v{i}" if i else None
            manifest = Manifest(model=demo.MODEL_NAME, version="pending", parent=parent, base=demo_chain.base,
                                recipe={"kind": "sa_proj"}, tasks=demo_chain.tasks)  # fmt: skip
            v = reg.create_version({layout.DELTA: demo_chain.versions[i].delta}, manifest).version
            reg.attach(v, layout.METRICS, demo_chain.versions[i].metrics)
            if gated:
                reg.attach(v, layout.DECISION, demo_decision(v, parent or "base"))
        if champion is not None:
            for i in range(int(champion[1:])):
                reg.promote(f"v{i + 1}", reason=f"gate passed vs {f'v{i}' if i else 'base'}")
        return reg

    return build


def _race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in n threads released together; each result or raised exception, in thread order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as err:  # collected and asserted on by the caller
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture
def race() -> Callable[[int, Callable[[int], Any]], list[Any]]:
    """``race(n, work)``: n threads calling ``work(i)`` at once; their results or exceptions, in thread order."""
    return _race
