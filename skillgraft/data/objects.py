"""Write-once objects for the intake: the same bytes written twice is one write, other bytes never overwrite."""

from __future__ import annotations

from skillgraft.data.errors import IntakeError
from skillgraft.store.base import KeyExists, KeyNotFound, ObjectStore


def put_same(store: ObjectStore, key: str, data: bytes, *, verify: bool = False, clash_ok: bool = False) -> bool:
    """Write ``data`` once. True if the key now holds exactly ``data`` (it already did: fine too); False if it
    holds other bytes and ``clash_ok``, else raise. ``verify`` reads a fresh write back and compares."""
    try:
        store.put_new(key, data)
    except KeyExists:
        try:
            same = store.get(key) == data
        except KeyNotFound:  # removed in between (ingested): write again
            return put_same(store, key, data, verify=verify, clash_ok=clash_ok)
        if same or clash_ok:
            return same
        raise IntakeError(f"{key} already exists with different content; objects are never overwritten") from None
    if verify and store.get(key) != data:
        raise IntakeError(f"{key}: bytes read back differ from the bytes written; the landed file was kept")
    return True


def remove_object(store: ObjectStore, key: str) -> None:
    """Delete ``key``; already gone (another ingester moved it first) is fine."""
    try:
        store.delete(key)
    except KeyNotFound:  # another ingester moved it first
        pass
