"""The object-store interface: a few primitives; manifests, listings and the registry are built on top."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable


class StoreError(Exception):
    """Base class for object-store errors."""


class KeyNotFound(StoreError, KeyError):
    def __init__(self, store_url: str, key: str) -> None:
        super().__init__(f"{key!r} not found in store {store_url}")
        self.key = key

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class KeyExists(StoreError):
    def __init__(self, store_url: str, key: str) -> None:
        super().__init__(f"{key!r} already exists in store {store_url}: objects are written once, never overwritten")
        self.key = key


class InvalidKey(StoreError, ValueError):
    """A key that is empty, absolute, or would leave the store's root / prefix ('..', '.', '//', '\\', NUL)."""


class UnsafeFile(StoreError):
    """A local store path that is not a plain file inside the store: a symbolic link (or a path through a linked
    directory), a FIFO, a device or a socket. It is never read, followed or written through."""

    def __init__(self, store_url: str, key: str, what: str, *, at: str | None = None) -> None:
        at = at or key
        problem = f"is {what}" if at == key else f"is refused: {at!r} on its path is {what}"
        super().__init__(
            f"{key!r} in store {store_url} {problem}; only plain files inside the store are objects, so nothing was "
            "read, followed or written through it"
        )
        self.key = key
        self.what = what
        self.at = at


class StoreUnreachable(StoreError):
    """The store's endpoint could not be reached (connection refused, DNS, timeout)."""


class StoreAccessDenied(StoreError):
    """The store refused the credentials (missing, wrong, expired) or the operation (permissions)."""


class BucketNotFound(StoreError):
    """The bucket named in the store URL does not exist."""


# Segment prefixes LocalStore uses for its own temp and lock files: never valid in a key.
RESERVED_SEGMENT_PREFIXES = (".tmp-", ".lock-")


def check_key(key: str, *, partial: bool = False) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`InvalidKey`.

    A key is '/'-separated segments, none empty, '.' or '..', with no backslash or NUL, and no segment starting with a
    reserved prefix. With ``partial`` (a listing prefix such as ``'models/'`` or ``'models/de'``), the empty string
    and one trailing '/' are allowed.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"invalid object key {key!r}: keys are strings")
    body = key[:-1] if partial and key.endswith("/") else key
    if partial and body == "":
        return key
    problem = None
    if body == "":
        problem = "it is empty"
    elif body.startswith("/"):
        problem = "it is absolute (starts with '/')"
    elif "\\" in body or "\x00" in body:
        problem = "it contains a backslash or NUL"
    else:
        for part in body.split("/"):
            if part in ("", ".", ".."):
                problem = "it has an empty, '.' or '..' segment (keys may not leave the store's root)"
                break
            if part.startswith(RESERVED_SEGMENT_PREFIXES):
                problem = f"segment {part!r} starts with a reserved prefix {RESERVED_SEGMENT_PREFIXES}"
                break
    if problem:
        raise InvalidKey(f"invalid object key {key!r}: {problem}; nothing was read or written")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """Keys are '/'-separated relative paths ('models/demo/champion.json'); values are bytes.

    ``etag`` values are opaque strings that change whenever the object's content changes. Every method rejects an
    unsafe key (see :func:`check_key`) with :class:`InvalidKey` before touching the store.
    """

    url: str

    def get(self, key: str) -> bytes:
        """The object's bytes; raises :class:`KeyNotFound`."""
        ...

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and its current etag, read together; raises :class:`KeyNotFound`."""
        ...

    def put_new(self, key: str, data: bytes) -> None:
        """Write an object that must not exist yet, atomically (readers see all of it or nothing).

        Raises :class:`KeyExists`, writing nothing, when the key exists."""
        ...

    def replace_if(self, key: str, data: bytes, expected: str | None) -> bool:
        """Conditional write: replace the object only if its etag is ``expected`` (``None``: only if it is absent).

        Returns False, writing nothing, when the condition does not hold (someone else wrote first).
        """
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove an object (only to move data out of the landing zone after a verified copy).

        Raises :class:`KeyNotFound` when there is none."""
        ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key that starts with ``prefix`` (a plain string prefix, not only a folder), sorted."""
        ...
