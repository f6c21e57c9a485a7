"""One contract for every ObjectStore: each test runs on a local directory and on a real S3 HTTP API (moto)."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config

from skillgraft.store import LocalStore, open_store
from skillgraft.store.base import (
    BucketNotFound,
    InvalidKey,
    KeyExists,
    KeyNotFound,
    ObjectStore,
    StoreAccessDenied,
    StoreUnreachable,
)
from skillgraft.store.s3 import S3Store

# --- both backends --------------------------------------------------------------------------------------------------


def test_store_satisfies_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_get_of_missing_key_raises_key_not_found(store: ObjectStore) -> None:
    with pytest.raises(KeyNotFound, match=re.escape("models/none.json")):
        store.get("models/none.json")
    with pytest.raises(KeyNotFound):
        store.get_with_etag("models/none.json")
    assert store.exists("models/none.json") is False


def test_put_new_then_get_round_trips_bytes(store: ObjectStore) -> None:
    payload = bytes(range(256)) * 64
    store.put_new("blobs/all-bytes.bin", payload)
    data, etag = store.get_with_etag("blobs/all-bytes.bin")
    assert data == payload and store.get("blobs/all-bytes.bin") == payload
    assert isinstance(etag, str) and etag
    assert store.exists("blobs/all-bytes.bin") is True


def test_put_new_twice_raises_key_exists_and_keeps_first_content(store: ObjectStore) -> None:
    store.put_new("a/once.txt", b"first")
    with pytest.raises(KeyExists, match=re.escape("a/once.txt")):
        store.put_new("a/once.txt", b"second")
    assert store.get("a/once.txt") == b"first"


def test_replace_if_with_current_etag_replaces_and_changes_etag(store: ObjectStore) -> None:
    store.put_new("p.json", b"v1")
    _, etag1 = store.get_with_etag("p.json")
    assert store.replace_if("p.json", b"v2", etag1) is True
    data, etag2 = store.get_with_etag("p.json")
    assert data == b"v2" and etag2 != etag1


def test_replace_if_with_stale_etag_returns_false_and_keeps_content(store: ObjectStore) -> None:
    store.put_new("p.json", b"v1")
    _, stale = store.get_with_etag("p.json")
    assert store.replace_if("p.json", b"v2", stale) is True
    assert store.replace_if("p.json", b"v3", stale) is False
    assert store.get("p.json") == b"v2"


def test_replace_if_expected_none_only_creates(store: ObjectStore) -> None:
    assert store.replace_if("c.json", b"created", None) is True
    assert store.get("c.json") == b"created"
    assert store.replace_if("c.json", b"again", None) is False
    assert store.get("c.json") == b"created"


def test_replace_if_with_an_etag_on_a_missing_key_returns_false(store: ObjectStore) -> None:
    store.put_new("elsewhere", b"x")
    _, etag = store.get_with_etag("elsewhere")
    assert store.replace_if("missing.json", b"x", etag) is False
    assert store.exists("missing.json") is False


def test_keys_are_sorted_and_prefix_scoped(store: ObjectStore) -> None:
    for key in ["models/dev/b", "models/demo/z", "models/demo/a/1", "models/x", "tasks/t/1", "models/demo/a/0"]:
        store.put_new(key, b"")
    assert list(store.keys()) == sorted(
        ["models/dev/b", "models/demo/z", "models/demo/a/1", "models/x", "tasks/t/1", "models/demo/a/0"]
    )
    assert list(store.keys("models/demo/")) == ["models/demo/a/0", "models/demo/a/1", "models/demo/z"]
    assert list(store.keys("models/de")) == ["models/demo/a/0", "models/demo/a/1", "models/demo/z", "models/dev/b"]
    assert list(store.keys("models/demo/a/0")) == ["models/demo/a/0"]
    assert list(store.keys("nothing/")) == []


def test_delete_removes_and_missing_delete_raises(store: ObjectStore) -> None:
    store.put_new("incoming/t/f.jsonl", b"row")
    store.delete("incoming/t/f.jsonl")
    assert store.exists("incoming/t/f.jsonl") is False
    assert list(store.keys("incoming/")) == []
    with pytest.raises(KeyNotFound):
        store.delete("incoming/t/f.jsonl")


BAD_KEYS = ["../x", "/abs", "", "a/../../b", "a//b", "a/./b", "a/", "a\\b", "a/.tmp-x", "nul\x00"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_by_every_operation(store: ObjectStore, key: str) -> None:
    operations: list[Callable[[], Any]] = [
        lambda: store.get(key),
        lambda: store.get_with_etag(key),
        lambda: store.put_new(key, b"x"),
        lambda: store.replace_if(key, b"x", None),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ]
    for operation in operations:
        with pytest.raises(InvalidKey, match="invalid object key"):
            operation()
    assert list(store.keys()) == []


@pytest.mark.parametrize("prefix", ["../", "/abs", "a/../..", "a//"])
def test_keys_rejects_prefixes_that_leave_the_store(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        store.keys(prefix)


def test_two_threads_racing_replace_if_on_the_same_etag_exactly_one_wins(store: ObjectStore, race) -> None:
    for round_ in range(8):
        key = f"race/{round_}.json"
        store.put_new(key, b"start")
        _, etag = store.get_with_etag(key)
        outcome = race(2, lambda i, key=key, etag=etag: store.replace_if(key, f"writer-{i}".encode(), etag))
        assert sorted(outcome) == [False, True], outcome
        assert store.get(key) == f"writer-{outcome.index(True)}".encode()


def test_threads_racing_put_new_exactly_one_wins(store: ObjectStore, race) -> None:
    outcome = race(3, lambda i: store.put_new("race/new.json", f"writer-{i}".encode()))
    winners = [i for i, r in enumerate(outcome) if r is None]
    assert len(winners) == 1 and all(isinstance(r, KeyExists) for r in outcome if r is not None), outcome
    assert store.get("race/new.json") == f"writer-{winners[0]}".encode()


# --- S3 only --------------------------------------------------------------------------------------------------------


def test_s3_keys_live_under_the_prefix_and_prefixes_do_not_see_each_other(s3_client: Any, s3_bucket: str) -> None:
    inner = S3Store(s3_bucket, "team/a", client=s3_client)
    sibling = S3Store(s3_bucket, "team/ab", client=s3_client)
    inner.put_new("models/m/x", b"1")
    sibling.put_new("models/m/y", b"2")
    raw = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert raw == ["team/a/models/m/x", "team/ab/models/m/y"]
    assert list(inner.keys()) == ["models/m/x"] and list(sibling.keys()) == ["models/m/y"]
    with pytest.raises(KeyNotFound):
        inner.get("models/m/y")
    with pytest.raises(InvalidKey):
        inner.get("../ab/models/m/y")


@pytest.mark.parametrize("prefix", ["../x", "a/../b", "a//b"])
def test_s3_prefix_that_could_escape_is_rejected(s3_client: Any, prefix: str) -> None:
    with pytest.raises(InvalidKey, match="prefix"):
        S3Store("some-bucket", prefix, client=s3_client)


def test_s3_from_url_takes_endpoint_from_env(
    monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, s3_bucket: str, s3_client: Any
) -> None:
    monkeypatch.setenv("SKILLGRAFT_S3_ENDPOINT_URL", s3_endpoint)
    store = open_store(f"s3://{s3_bucket}/runs/nightly/")
    assert isinstance(store, S3Store)
    assert store.url == f"s3://{s3_bucket}/runs/nightly" and store.endpoint == s3_endpoint
    store.put_new("models/m/model.json", b"{}")
    assert s3_client.get_object(Bucket=s3_bucket, Key="runs/nightly/models/m/model.json")["Body"].read() == b"{}"


def test_open_store_on_a_path_is_a_local_store(tmp_path: Any) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)


def test_s3_missing_bucket_raises_a_clear_error_for_every_operation(s3_client: Any, s3_endpoint: str) -> None:
    store = S3Store("sg-no-such-bucket", "p", client=s3_client)
    operations: list[Callable[[], Any]] = [
        lambda: store.get("k"),
        lambda: store.put_new("k", b"x"),
        lambda: store.replace_if("k", b"x", None),
        lambda: store.exists("k"),
        lambda: list(store.keys()),
    ]
    for operation in operations:
        with pytest.raises(BucketNotFound) as info:
            operation()
        message = str(info.value)
        assert "'sg-no-such-bucket'" in message and s3_endpoint in message and "does not exist" in message
        assert "nothing was written" in message


def _closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_s3_unreachable_endpoint_raises_a_clear_error() -> None:
    endpoint = f"http://127.0.0.1:{_closed_loopback_port()}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    store = S3Store("sg-any-bucket", client=client)
    for operation in (lambda: store.get("k"), lambda: store.put_new("k", b"x"), lambda: list(store.keys())):
        with pytest.raises(StoreUnreachable) as info:
            operation()
        assert endpoint in str(info.value) and "SKILLGRAFT_S3_ENDPOINT_URL" in str(info.value)


def test_s3_wrong_credentials_raise_a_clear_error_without_the_secret(s3_endpoint: str, s3_bucket: str) -> None:
    key_id, secret = "AKIASKILLGRAFTWRONG1", "wrong-secret-do-not-print"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    store = S3Store(s3_bucket, client=client)
    _set_moto_auth(s3_endpoint, "0")  # from now on moto checks credentials (it knows no IAM users: all are wrong)
    try:
        with pytest.raises(StoreAccessDenied) as info:
            store.get("k")
    finally:
        _set_moto_auth(s3_endpoint, "inf")
    message = str(info.value)
    assert f"'{s3_bucket}'" in message and s3_endpoint in message and "AWS_ACCESS_KEY_ID" in message
    assert secret not in message and key_id not in message


def _set_moto_auth(endpoint: str, initial_no_auth_actions: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=initial_no_auth_actions.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},  # a form content type would hide the body from moto
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_s3_missing_credentials_raise_a_clear_error(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("SKILLGRAFT_S3_ENDPOINT_URL", s3_endpoint)
    store = S3Store.from_url("s3://sg-any-bucket/p")
    with pytest.raises(StoreAccessDenied, match="no usable AWS credentials"):
        store.get("k")
