"""Any S3 API (AWS, MinIO, Ceph, moto...) as an object store, through boto3.

Write-once and compare-and-swap use S3 conditional writes: ``put_object(IfNoneMatch="*")`` for :meth:`S3Store.put_new`
and ``put_object(IfMatch=<etag>)`` for :meth:`S3Store.replace_if`; the server decides atomically, so two writers never
both win. The etag is the object's ETag header, passed back verbatim.

Objects of any size: a create-only write (``put_new``, and ``replace_if`` with ``expected=None``) above
``multipart_threshold`` (default 64 MiB) goes as a multipart upload of ``part_size`` parts (default 16 MiB) whose
completion carries ``IfNoneMatch="*"``, so it lands whole or not at all and two writers still never both win; an
upload that fails or loses the race is aborted (no orphaned parts). A replacement (``IfMatch``) stays one
``put_object`` (up to S3's 5 GB): only small records are ever replaced (pointer, history, guards), and not every S3
API checks ``IfMatch`` on CompleteMultipartUpload (moto does not). boto3's managed transfer cannot carry those conditions, so the parts
are sent here, one at a time (bounded memory beyond the object itself). Every write sends a SHA-256 checksum (each part
its own) that the server verifies; every read asks for checksum validation: botocore checks a whole-object SHA-256, and a multipart object's
composite SHA-256 (the SHA-256 of its parts' SHA-256s) is recomputed here from the bytes read.

Failures a user must fix (no endpoint, wrong credentials, missing bucket) raise one :class:`StoreError` subclass
each, naming the bucket and endpoint and what to check — never the credentials themselves.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Iterator
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from skillgraft.store.base import (
    BucketNotFound,
    InvalidKey,
    KeyExists,
    KeyNotFound,
    StoreAccessDenied,
    StoreError,
    StoreUnreachable,
    check_key,
)

ENDPOINT_ENV_VARS = ("SKILLGRAFT_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")

_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
    }
)
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden"})
MULTIPART_THRESHOLD = 64 * 1024 * 1024
"""Writes above this many bytes go as a multipart upload (completed under the write's condition)."""
PART_SIZE = 16 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part (all but the last)
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


def _without_userinfo(url: str | None) -> str:
    """An endpoint URL safe to print: any ``user:password@`` part is dropped."""
    if not url:
        return "the default AWS endpoint"
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def _normalize_prefix(prefix: str) -> str:
    """``'a/b/'`` → ``'a/b'``; rejects prefixes that are absolute or hold '.'/'..'/empty segments."""
    stripped = prefix.strip("/") if prefix else ""
    if not stripped:
        return ""
    try:
        check_key(stripped)
    except InvalidKey:
        raise InvalidKey(
            f"invalid S3 store prefix {prefix!r}: use '/'-separated names without '.', '..' or '//'"
        ) from None
    return stripped


class S3Store:
    """Objects under ``s3://<bucket>/<prefix>/``; every key is relative to the prefix and can't leave it.

    Pass ``client`` to reuse a configured boto3 S3 client (tests, custom timeouts); otherwise one is built from the
    standard AWS credential chain (env, profile, instance role) with ``endpoint_url`` / ``region`` if given and
    standard-mode retries (5 attempts).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
    ) -> None:
        if part_size < MIN_PART_SIZE or multipart_threshold < part_size:
            raise StoreError(
                f"S3 multipart: part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum) and multipart_threshold "
                f"at least part_size; got part_size {part_size}, multipart_threshold {multipart_threshold}"
            )
        self.multipart_threshold, self.part_size = multipart_threshold, part_size
        if not bucket or "/" in bucket:
            raise StoreError(f"invalid S3 bucket name {bucket!r}: give the bare bucket name (s3://<bucket>/<prefix>)")
        self.bucket = bucket
        self.prefix = _normalize_prefix(prefix)
        if client is None:
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(retries={"mode": "standard", "max_attempts": 5}),
            )
        self._client: Any = client
        self.endpoint = _without_userinfo(getattr(getattr(client, "meta", None), "endpoint_url", endpoint_url))
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._bucket_seen = False  # set once any bucket-scoped call succeeded: a later 404 is about a key

    @classmethod
    def from_url(cls, url: str, *, region: str | None = None, client: Any | None = None) -> S3Store:
        """``s3://bucket/optional/prefix``; the endpoint comes from ``SKILLGRAFT_S3_ENDPOINT_URL`` or
        ``AWS_ENDPOINT_URL`` (unset: AWS itself), credentials from the standard AWS chain — unless ``client`` (a
        configured boto3 S3 client, e.g. from a Prefect credentials block) is given, which brings its own."""
        parts = urlsplit(url)
        if "@" in parts.netloc:  # never echo it: the part before '@' is likely a key or a secret
            raise StoreError(
                "an S3 store URL must not carry credentials (s3://<user>:<secret>@...); give s3://<bucket>/<prefix> "
                "and supply credentials through the AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "or an instance role)"
            )
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"not an S3 store URL: {url!r}; expected s3://<bucket>/<prefix>")
        if client is not None:
            return cls(parts.netloc, parts.path, client=client)
        endpoint = next((os.environ[v] for v in ENDPOINT_ENV_VARS if os.environ.get(v)), None)
        return cls(parts.netloc, parts.path, endpoint_url=endpoint, region=region)

    # --- keys ---------------------------------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    # --- errors -------------------------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint}"

    def _raise(self, err: Exception, action: str) -> NoReturn:
        """Turn a botocore error into the StoreError a user can act on; never includes credentials."""
        if isinstance(err, (EndpointConnectionError, ConnectTimeoutError)):
            raise StoreUnreachable(
                f"cannot reach the S3 endpoint {self.endpoint} to {action} in bucket {self.bucket!r} "
                f"({type(err).__name__}); check SKILLGRAFT_S3_ENDPOINT_URL / AWS_ENDPOINT_URL and that the server is "
                f"running and reachable from here. The operation did not complete (if an earlier retry reached the "
                f"server before it went away, that write may have landed: skillgraft's writes are write-once or "
                f"conditional, so retrying is safe)"
            ) from None
        if isinstance(err, (ConnectionClosedError, ReadTimeoutError)):
            raise StoreUnreachable(
                f"the S3 endpoint {self.endpoint} stopped answering while trying to {action} in bucket "
                f"{self.bucket!r} ({type(err).__name__}) after all retries; the request may or may not have been "
                f"applied: check the server's health and network, then retry"
            ) from None
        if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
            raise StoreAccessDenied(
                f"no usable AWS credentials to {action} in {self._where()}: set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an instance role is available; nothing was sent"
            ) from None
        if isinstance(err, ClientError):
            error = err.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code == "NoSuchBucket":
                self._bucket_missing(action)
            if code in _CREDENTIAL_CODES:
                raise StoreAccessDenied(
                    f"S3 rejected the credentials ({code}) to {action} in {self._where()}: check AWS_ACCESS_KEY_ID / "
                    f"AWS_SECRET_ACCESS_KEY / AWS_PROFILE (and the session token if temporary) and that they belong "
                    f"to this endpoint; nothing was written"
                ) from None
            if code in _DENIED_CODES:
                raise StoreAccessDenied(
                    f"access denied ({code}) to {action} in {self._where()}: check that the credentials are right "
                    f"and allowed s3:GetObject/PutObject/ListBucket/DeleteObject on this bucket; nothing was written"
                ) from None
            message = error.get("Message", "")
            raise StoreError(f"S3 error {code or 'unknown'} to {action} in {self._where()}: {message}") from err
        if isinstance(err, BotoCoreError):
            raise StoreError(f"S3 client error to {action} in {self._where()}: {err}") from err
        raise err

    def _bucket_missing(self, action: str) -> NoReturn:
        raise BucketNotFound(
            f"{self._where()} does not exist (needed to {action}): create it (e.g. `aws s3 mb s3://{self.bucket}`) "
            f"or fix the store URL / endpoint; nothing was written"
        ) from None

    @staticmethod
    def _code(err: ClientError) -> str:
        return str(err.response.get("Error", {}).get("Code", ""))

    # --- primitives ---------------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        full = self._full(key)
        try:
            # botocore checks a whole-object SHA-256 itself; a multipart object's is composite: checked below
            response = self._client.get_object(Bucket=self.bucket, Key=full, ChecksumMode="ENABLED")
            data = response["Body"].read()
        except ClientError as err:
            if self._code(err) in _MISSING_KEY_CODES:
                raise KeyNotFound(self.url, key) from None
            self._raise(err, f"read {key!r}")
        except BotoCoreError as err:
            self._raise(err, f"read {key!r}")
        self._bucket_seen = True
        checksum = response.get("ChecksumSHA256") or ""
        if "-" in checksum:
            self._check_composite(key, data, checksum)
        return data, response["ETag"]

    def _check_composite(self, key: str, data: bytes, checksum: str) -> None:
        """A multipart object's SHA-256 is the SHA-256 of its parts' SHA-256s, ``-<parts>``: recompute it from the
        bytes read, for the part size this store writes (or the common ones other tools use)."""
        digest, count = checksum.rsplit("-", 1)
        parts = int(count)
        sizes = [self.part_size, 8 * 1024 * 1024, MIN_PART_SIZE, 16 * 1024 * 1024, 64 * 1024 * 1024]
        for size in dict.fromkeys(sizes):
            if -(-len(data) // size) != parts:
                continue
            inner = b"".join(hashlib.sha256(data[i : i + size]).digest() for i in range(0, len(data), size))
            if base64.b64encode(hashlib.sha256(inner).digest()).decode() == digest:
                return
        raise StoreError(
            f"{key!r} in {self._where()} does not match its stored SHA-256 ({checksum}): the bytes read are not the "
            f"bytes written (or its {parts} parts have a size skillgraft does not write); nothing was used"
        )

    def exists(self, key: str) -> bool:
        full = self._full(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as err:
            if self._code(err) in _MISSING_KEY_CODES:
                # A HEAD has no body: a missing bucket also reads as 404. Ask once, so a typo in the bucket name
                # fails loudly instead of looking like an empty store.
                self._check_bucket(f"check whether {key!r} exists")
                return False
            self._raise(err, f"check whether {key!r} exists")
        except BotoCoreError as err:
            self._raise(err, f"check whether {key!r} exists")
        self._bucket_seen = True
        return True

    def _check_bucket(self, action: str) -> None:
        if self._bucket_seen:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            if self._code(err) in ("404", "NoSuchBucket", "NotFound"):
                self._bucket_missing(action)
            if self._code(err) in _DENIED_CODES:
                return  # allowed to read keys but not to head the bucket: can't tell, trust the key's 404
            self._raise(err, action)
        except BotoCoreError as err:
            self._raise(err, action)
        self._bucket_seen = True

    def _put(self, key: str, data: bytes, action: str, **condition: str) -> bool:
        """Conditional put; False when the server refused the condition (412, or 409 for a concurrent write)."""
        full = self._full(key)
        try:
            if len(data) > self.multipart_threshold and condition.get("IfNoneMatch") == "*":
                self._put_parts(full, data, condition)
            else:
                self._client.put_object(
                    Bucket=self.bucket, Key=full, Body=data, ChecksumAlgorithm="SHA256", **condition
                )
        except ClientError as err:
            code = self._code(err)
            if code in _CONFLICT_CODES:
                self._bucket_seen = True
                return False
            if "IfMatch" in condition and code in _MISSING_KEY_CODES:
                return False  # the object we expected is gone: the condition does not hold
            self._raise(err, action)
        except BotoCoreError as err:
            self._raise(err, action)
        self._bucket_seen = True
        return True

    def _put_parts(self, full: str, data: bytes, condition: dict[str, str]) -> None:
        """A multipart upload of ``data`` completed under ``condition``; aborted unless it completes."""
        upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=full, ChecksumAlgorithm="SHA256")
        upload_id, done = upload["UploadId"], False
        try:
            parts, view = [], io.BytesIO(data)
            for number in range(1, -(-len(data) // self.part_size) + 1):
                body = view.read(self.part_size)
                sent = self._client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number,
                                                Body=body, ChecksumAlgorithm="SHA256")  # fmt: skip
                parts.append({"PartNumber": number, "ETag": sent["ETag"], "ChecksumSHA256": sent["ChecksumSHA256"]})
            self._client.complete_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                   MultipartUpload={"Parts": parts}, **condition)  # fmt: skip
            done = True
        finally:
            if not done:
                try:
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
                except (ClientError, BotoCoreError):
                    pass  # the original error is the one to report; a bucket lifecycle rule reaps stale uploads

    def put_new(self, key: str, data: bytes) -> None:
        if not self._put(key, data, f"write {key!r}", IfNoneMatch="*"):
            raise KeyExists(self.url, key)

    def replace_if(self, key: str, data: bytes, expected: str | None) -> bool:
        if expected is None:
            return self._put(key, data, f"create {key!r}", IfNoneMatch="*")
        return self._put(key, data, f"replace {key!r}", IfMatch=expected)

    def delete(self, key: str) -> None:
        if not self.exists(key):  # S3 deletes of a missing key succeed silently; the contract says KeyNotFound
            raise KeyNotFound(self.url, key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except (ClientError, BotoCoreError) as err:
            self._raise(err, f"delete {key!r}")

    def keys(self, prefix: str = "") -> Iterator[str]:
        check_key(prefix, partial=True)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        return self._list(full, prefix)

    def _list(self, full: str, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            # S3 lists keys in UTF-8 byte order, which is code-point order: already sorted like str.
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                self._bucket_seen = True
                for item in page.get("Contents", ()):
                    yield self._relative(item["Key"])
        except (ClientError, BotoCoreError) as err:
            self._raise(err, f"list keys under {prefix!r}")

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"
