"""Objects larger than the multipart threshold on a real S3 API (moto over HTTP): written as a multipart upload that
keeps the write's condition, read back part by part with each part's SHA-256 checked, and never left half-done."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from typing import Any

import pytest

from skillgraft.store import KeyExists, StoreError
from skillgraft.store.s3 import MIN_PART_SIZE, S3Store

PART = MIN_PART_SIZE  # S3's smallest part: keeps the test's objects small (12 MiB → 3 parts)


@pytest.fixture
def small_parts(s3_client: Any, s3_bucket: str) -> S3Store:
    return S3Store(s3_bucket, "team/big", client=s3_client, multipart_threshold=PART, part_size=PART)


def big(n: int = 2 * PART + 1234, seed: int = 0) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + os.urandom(n % 32)


def uploads_in_progress(s3_client: Any, bucket: str) -> list:
    return s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_a_big_object_goes_up_in_parts_and_comes_back_whole(small_parts: S3Store, s3_client, s3_bucket) -> None:
    data = big()
    small_parts.put_new("models/m/versions/v1/delta.safetensors", data)
    head = s3_client.head_object(Bucket=s3_bucket, Key="team/big/models/m/versions/v1/delta.safetensors",
                                 ChecksumMode="ENABLED")  # fmt: skip
    assert head["ETag"].endswith('-3"')  # stored as a multipart object of 3 parts
    inner = b"".join(hashlib.sha256(data[i : i + PART]).digest() for i in range(0, len(data), PART))
    # the server's composite SHA-256 (S3 writes it with a -3 suffix; moto's HEAD leaves the suffix off)
    assert head["ChecksumSHA256"].split("-")[0] == base64.b64encode(hashlib.sha256(inner).digest()).decode()
    got, etag = small_parts.get_with_etag("models/m/versions/v1/delta.safetensors")
    assert got == data and etag == head["ETag"]
    assert not uploads_in_progress(s3_client, s3_bucket)


def test_write_once_holds_for_a_multipart_write_and_the_loser_leaves_no_parts(
    small_parts: S3Store, s3_client, s3_bucket
) -> None:
    small_parts.put_new("k", big(seed=1))
    with pytest.raises(KeyExists):
        small_parts.put_new("k", big(seed=2))  # refused at completion: the first object stays
    assert small_parts.get("k")[:-32] == big(seed=1)[:-32]  # (the last bytes are random in each)
    assert not uploads_in_progress(s3_client, s3_bucket)  # the refused upload was aborted


def test_compare_and_swap_on_a_big_object_keeps_its_guarantee(small_parts: S3Store, s3_client, s3_bucket) -> None:
    first = big(seed=3)
    assert small_parts.replace_if("champion.bin", first, None)  # create-only: a multipart upload
    assert not small_parts.replace_if("champion.bin", big(seed=6), None)  # exists: refused at completion
    _, etag = small_parts.get_with_etag("champion.bin")
    assert etag.endswith('-3"')
    second = big(seed=4)
    assert small_parts.replace_if("champion.bin", second, etag)  # a replacement: one conditional put
    assert not small_parts.replace_if("champion.bin", big(seed=5), etag)  # stale etag: refused, nothing written
    assert small_parts.get("champion.bin")[:-32] == second[:-32]
    assert not uploads_in_progress(s3_client, s3_bucket)


def test_a_part_that_fails_aborts_the_upload(small_parts: S3Store, s3_client, s3_bucket, monkeypatch) -> None:
    from botocore.exceptions import ClientError

    calls = {"n": 0}
    original = s3_client.upload_part

    def flaky(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "disk on fire"}}, "UploadPart")
        return original(**kwargs)

    monkeypatch.setattr(s3_client, "upload_part", flaky)
    with pytest.raises(StoreError, match="InternalError"):
        small_parts.put_new("k2", big())
    assert not small_parts.exists("k2") and not uploads_in_progress(s3_client, s3_bucket)


def test_a_multipart_object_whose_bytes_do_not_match_its_checksum_is_refused(
    small_parts: S3Store, s3_client, s3_bucket, monkeypatch
) -> None:
    small_parts.put_new("k3", big())
    original = s3_client.get_object

    def tampered(**kwargs):  # what a corrupting proxy or disk would hand back: same length, one byte changed
        response = original(**kwargs)
        body = bytearray(response["Body"].read())
        body[PART + 7] ^= 0xFF
        response["Body"] = io.BytesIO(bytes(body))
        return response

    monkeypatch.setattr(s3_client, "get_object", tampered)
    with pytest.raises(StoreError, match="does not match its stored SHA-256"):
        small_parts.get("k3")


def test_small_objects_stay_single_puts_with_a_checksum(small_parts: S3Store, s3_client, s3_bucket) -> None:
    small_parts.put_new("small.json", b"{}")
    head = s3_client.head_object(Bucket=s3_bucket, Key="team/big/small.json", ChecksumMode="ENABLED")
    assert "-" not in head["ETag"] and head.get("ChecksumSHA256") == "RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o="
    assert small_parts.get("small.json") == b"{}"


def test_part_settings_below_s3s_minimum_are_refused(s3_client, s3_bucket) -> None:
    with pytest.raises(StoreError, match="part_size must be at least"):
        S3Store(s3_bucket, "p", client=s3_client, part_size=1024)
