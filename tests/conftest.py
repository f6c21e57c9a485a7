"""Shared pytest fixtures, one section per topic (each starts with a `# --- <topic> fixtures ---` header)."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

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
