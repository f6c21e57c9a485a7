"""Object storage: one interface, a local directory (embedded default) and any S3 API."""

from skillgraft.store.base import KeyExists, KeyNotFound, ObjectStore, StoreError
from skillgraft.store.local import LocalStore


def open_store(url: str) -> ObjectStore:
    """Open a store from a URL: a local path (or ``file://`` URL) or ``s3://bucket/prefix``."""
    if url.startswith("s3://"):
        from skillgraft.store.s3 import S3Store

        return S3Store.from_url(url)
    if url.startswith("file://"):
        url = url[len("file://") :]
    return LocalStore(url)


__all__ = ["KeyExists", "KeyNotFound", "LocalStore", "ObjectStore", "StoreError", "open_store"]
