"""Object storage: one interface, a local directory (embedded default) and any S3 API."""

from typing import Any

from skillgraft.store.base import (
    BucketNotFound,
    InvalidKey,
    KeyExists,
    KeyNotFound,
    ObjectStore,
    StoreAccessDenied,
    StoreError,
    StoreUnreachable,
    check_key,
)
from skillgraft.store.local import LocalStore


def open_store(url: str, *, s3_client: Any | None = None) -> ObjectStore:
    """Open a store from a URL: a local path (or ``file://`` URL) or ``s3://bucket/prefix``.

    For S3 the endpoint comes from ``SKILLGRAFT_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL`` (unset: AWS) and the
    credentials from the standard AWS chain, unless ``s3_client`` (a configured boto3 S3 client) is given; boto3 is
    imported only here.
    """
    if url.startswith("s3://"):
        from skillgraft.store.s3 import S3Store

        return S3Store.from_url(url, client=s3_client)
    if s3_client is not None:
        raise StoreError(f"an S3 client was given for {url!r}, which is not an s3:// store URL")
    if url.startswith("file://"):
        url = url[len("file://") :]
    return LocalStore(url)


__all__ = [
    "BucketNotFound",
    "InvalidKey",
    "KeyExists",
    "KeyNotFound",
    "LocalStore",
    "ObjectStore",
    "StoreAccessDenied",
    "StoreError",
    "StoreUnreachable",
    "check_key",
    "open_store",
]
