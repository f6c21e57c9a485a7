"""The S3 endpoint goes away while a version is being written or promoted: a clear StoreError, the champion unchanged,
nothing lost, and the same operation succeeds once the endpoint is back.

The registry talks to moto's S3 HTTP API through a TCP proxy on loopback that the test controls: closing it drops the
listener and every open connection, and it can cut a request after a given number of bytes (mid-upload) or swallow
the response to a request the server has already applied.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from invariants import assert_sound, snapshot

from skillgraft.refs import Manifest
from skillgraft.registry import Registry
from skillgraft.store import StoreError, StoreUnreachable
from skillgraft.store.base import ObjectStore
from skillgraft.store.s3 import S3Store


class LoopbackProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream``; :meth:`stop` is the endpoint going away, :meth:`start`
    brings it back on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.port = upstream, 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._request_budget: int | None = None  # armed by cut_request_after
        self._swallow_response = False  # armed by swallow_next_response
        self.cuts: list[str] = []  # what each armed fault actually did, for the tests to check

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
            self._request_budget, self._swallow_response = None, False
        for sock in ([listener] if listener else []) + list(sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()/recv() on Linux
            except OSError:
                pass
            sock.close()

    def cut_request_after(self, n: int) -> None:
        """Let ``n`` more request bytes through, then go away (the client is mid-upload)."""
        with self._lock:
            self._request_budget = n

    def swallow_next_response(self) -> None:
        """Forward the next request whole, then go away instead of returning the server's final response."""
        with self._lock:
            self._swallow_response = True

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close(), server.close()
                    return
                self._open |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, is_request: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                break
            cut = False
            with self._lock:
                if is_request and self._request_budget is not None:
                    data, cut = data[: self._request_budget], len(data) >= self._request_budget
                    self._request_budget -= len(data)
                    if cut:
                        self.cuts.append("request cut")
                elif not is_request and self._swallow_response and not data.startswith(b"HTTP/1.1 100"):
                    self.cuts.append(f"response swallowed: {data.split(b' ', 2)[1].decode()}")
                    data, cut = b"", True
            try:
                if data:
                    dst.sendall(data)
            except OSError:
                return
            if cut:
                self.stop()
                return
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Trigger:
    """A store that runs ``action`` once, just before the first write whose key ends with ``suffix``."""

    def __init__(self, inner: ObjectStore, suffix: str, action: Callable[[], None]) -> None:
        self.inner, self.url, self.suffix, self.action = inner, inner.url, suffix, action
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _maybe(self, key: str) -> None:
        if not self.fired and key.endswith(self.suffix):
            self.fired = True
            self.action()

    def put_new(self, key: str, data: bytes) -> None:
        self._maybe(key)
        self.inner.put_new(key, data)

    def replace_if(self, key: str, data: bytes, expected: str | None) -> bool:
        self._maybe(key)
        return self.inner.replace_if(key, data, expected)


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[LoopbackProxy]:
    parts = urlsplit(s3_endpoint)
    p = LoopbackProxy((parts.hostname or "127.0.0.1", parts.port or 80))
    p.start()
    yield p
    p.stop()


@pytest.fixture
def proxied_store(proxy: LoopbackProxy, s3_bucket: str) -> S3Store:
    """An S3Store reaching moto only through the proxy; 2 attempts and short timeouts, so a dead endpoint fails fast."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3", endpoint_url=proxy.url, region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=2, read_timeout=5),
    )  # fmt: skip
    return S3Store(s3_bucket, "team/skillgraft", client=client)


def new_version(reg: Registry, demo_chain: Any, index: int) -> str:
    parent = reg.champion()
    manifest = Manifest(model="demo", version="pending", parent=parent.version if parent else None,
                        base=demo_chain.base, recipe={"kind": "sa_proj"}, tasks=demo_chain.tasks)  # fmt: skip
    files = {"delta.safetensors": demo_chain.versions[index].delta, "notes.json": b'{"run": 1}'}
    return reg.create_version(files, manifest).version


@pytest.mark.parametrize("how", ["between-files", "mid-upload"])
def test_endpoint_gone_while_writing_a_version_fails_clearly_and_a_retry_completes(
    how: str, proxy: LoopbackProxy, proxied_store: S3Store, demo_registry: Callable[..., Registry], demo_chain: Any
) -> None:
    demo_registry(proxied_store, versions=1, champion="v1")
    before = snapshot(Registry(proxied_store, "demo"))
    if how == "between-files":  # the delta is stored, then the endpoint is gone before notes.json
        fault = Trigger(proxied_store, "/v2/notes.json", proxy.stop)
    else:  # 16 KiB of the ~74 KiB delta reach the server, then the connection and the endpoint are gone
        fault = Trigger(proxied_store, "/v2/delta.safetensors", lambda: proxy.cut_request_after(16 * 1024))
    reg = Registry(fault, "demo", actor="tester@ci")  # type: ignore[arg-type]

    with pytest.raises(StoreUnreachable, match=rf"cannot reach the S3 endpoint {proxy.url}") as err:
        new_version(reg, demo_chain, 1)
    assert "retrying is safe" in str(err.value) and "testing" not in str(err.value)  # no credentials in the message
    assert fault.fired and proxy.cuts == ([] if how == "between-files" else ["request cut"])

    proxy.start()  # the endpoint is back
    reg = Registry(proxied_store, "demo", actor="tester@ci")
    assert_sound(reg, before)
    assert reg.champion().version == "v1"  # type: ignore[union-attr]
    v2 = reg.versions(verify=True)[1]
    assert v2.version == "v2" and v2.status == "incomplete"
    # A partial upload never becomes an object: S3 stores a PUT whole or not at all.
    assert v2.files == (["delta.safetensors"] if how == "between-files" else [])

    retried = new_version(reg, demo_chain, 1)  # the retry claims the next id and completes
    assert retried == "v3" and reg.verify("v3") == []
    assert reg.promote("v3", reason="retry after the outage").version == "v3"
    assert_sound(reg, before)


def test_endpoint_gone_before_the_pointer_write_leaves_the_champion_unchanged(
    proxy: LoopbackProxy, proxied_store: S3Store, demo_registry: Callable[..., Registry]
) -> None:
    demo_registry(proxied_store, versions=2, champion="v1")
    before = snapshot(Registry(proxied_store, "demo"))
    fault = Trigger(proxied_store, "/champion.json", proxy.stop)
    with pytest.raises(StoreError, match="cannot reach the S3 endpoint"):
        Registry(fault, "demo").promote("v2", reason="during an outage")  # type: ignore[arg-type]

    proxy.start()
    reg = Registry(proxied_store, "demo", actor="tester@ci")
    assert reg.champion().version == "v1"  # type: ignore[union-attr]
    assert_sound(reg, before)
    assert reg.history() == before.history
    assert reg.promote("v2", reason="after the outage").previous == "v1"
    assert [(e.action, e.version) for e in reg.history()] == [("promote", "v1"), ("promote", "v2")]


def test_endpoint_gone_after_the_pointer_write_landed_reports_an_error_but_the_state_stays_sound(
    proxy: LoopbackProxy, proxied_store: S3Store, demo_registry: Callable[..., Registry]
) -> None:
    """The server applied the pointer write but its answer never came back: the caller sees StoreUnreachable ("may
    have landed"); the store is sound either way, and the next move logs the one that landed."""
    demo_registry(proxied_store, versions=3, champion="v1")
    before = snapshot(Registry(proxied_store, "demo"))
    fault = Trigger(proxied_store, "/champion.json", proxy.swallow_next_response)
    with pytest.raises(StoreUnreachable):
        Registry(fault, "demo", actor="tester@ci").promote("v2", reason="answer lost")  # type: ignore[arg-type]
    assert proxy.cuts == ["response swallowed: 200"]

    proxy.start()
    reg = Registry(proxied_store, "demo", actor="tester@ci")
    assert_sound(reg, before)
    assert reg.champion().version == "v2"  # type: ignore[union-attr]  # it landed
    gap = reg.unlogged_move()
    assert gap is not None and (gap.action, gap.version, gap.reason) == ("promote", "v2", "answer lost")
    reg.promote("v3", reason="next run")
    assert [(e.action, e.version, e.from_version) for e in reg.history()] == [
        ("promote", "v1", None), ("promote", "v2", "v1"), ("promote", "v3", "v2"),
    ]  # fmt: skip
    assert reg.unlogged_move() is None
