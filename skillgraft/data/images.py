"""Images of vision-language tasks: how an example's ``image`` is referenced, checked and stored.

In a submitted data file, ``image`` is a relative path (``imgs/0001.png``): relative to the data file's folder on
your disk (``skillgraft submit`` / ``run`` upload it), or to the task's landing folder ``incoming/<task>/`` in the
store (drop the data file and its images there together). Paths use ``/``, letters, digits, ``_ . -``; no ``..``,
no absolute paths; the extension says it is an image (.png .jpg .jpeg .webp .gif .bmp).

When a batch is accepted each image is checked (it exists, is at most :data:`MAX_IMAGE_BYTES`, decodes as one of
:data:`FORMATS`, has at most :data:`MAX_PIXELS` pixels) and stored once by content, ``tasks/<task>/images/<sha256>.<ext>``;
the accepted splits reference it as ``images/<sha256>.<ext>`` (a *content reference*), so the same picture under two
names is one image, the same question about two different pictures is two examples, and an image read back is
checked against its name. A content reference may also be submitted as is, for images the task already holds.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from typing import Any

from skillgraft import layout
from skillgraft.layout import IMAGE_SUFFIXES as SUFFIXES
from skillgraft.layout import is_image_name

__all__ = ["FORMATS", "MAX_IMAGE_BYTES", "MAX_PIXELS", "ImageProblem", "check_ref", "content_ref", "decode",
           "inspect", "is_content_ref", "is_image_name"]  # fmt: skip

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
MAX_IMAGE_BYTES = 32 << 20
MAX_PIXELS = 50_000_000
"""Larger images are refused before they are decoded (a small file can expand to gigabytes: a decompression bomb)."""
MAX_REF_CHARS = 200

_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_REF = re.compile(rf"{_PART}(/{_PART})*")


class ImageProblem(ValueError):
    """An image reference or image that can't be used; the message says what is wrong with it."""


def is_content_ref(ref: str) -> bool:
    return layout.content_ref_hash(ref) is not None


def check_ref(ref: str) -> str:
    """``ref`` if it is a safe relative image path, else :class:`ImageProblem` saying why."""
    if len(ref) > MAX_REF_CHARS:
        raise ImageProblem(f"image path is {len(ref)} characters, over {MAX_REF_CHARS}")
    if ref.startswith("/") or re.match(r"^[A-Za-z]:", ref) or "\\" in ref:
        raise ImageProblem(f"image path {ref!r} must be relative, with '/' between folders")
    if any(part in ("..", ".") for part in ref.split("/")):
        raise ImageProblem(f"image path {ref!r} must not contain '.' or '..' parts")
    if not _REF.fullmatch(ref):
        raise ImageProblem(f"image path {ref!r} may use only letters, digits, '_', '.', '-' and '/' between folders")
    if not is_image_name(ref):
        raise ImageProblem(f"image path {ref!r} has no image extension ({', '.join(sorted(SUFFIXES))})")
    return ref


def content_ref(data: bytes, suffix: str) -> str:
    return layout.image_content_ref(hashlib.sha256(data).hexdigest(), suffix)


def content_hash(ref: str) -> str:
    digest = layout.content_ref_hash(ref)
    if digest is None:
        raise ImageProblem(f"{ref!r} is not a content reference ({layout.IMAGES_DIR}/<sha256>.<ext>)")
    return digest


def _open(data: bytes) -> Any:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def inspect(data: bytes, ref: str | None = None) -> str:
    """Check that ``data`` is a usable image; returns the extension of its real format (``.png``...). ``ref``
    (where the image came from) starts the message of the :class:`ImageProblem` raised."""
    try:
        return _inspect(data)
    except ImageProblem as e:
        if ref is None:
            raise
        raise ImageProblem(f"image {ref!r}: {e}") from None


def _inspect(data: bytes) -> str:
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise ImageProblem(f"image is {len(data):,} bytes, over the {MAX_IMAGE_BYTES:,}-byte limit")
    if not data:
        raise ImageProblem("image file is empty")
    try:
        img = _open(data)
        fmt, (w, h) = img.format, img.size
        if w * h > MAX_PIXELS:
            raise ImageProblem(f"image is {w}x{h} pixels, over the {MAX_PIXELS:,}-pixel limit")
        img.verify()  # structure and checksums, without decoding every pixel
        _open(data).load()  # and the pixels themselves (truncated files fail here)
    except ImageProblem:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageProblem("file is not an image this version of Pillow can read") from None
    except Exception as e:  # noqa: BLE001 - any decoder error means the image is broken
        raise ImageProblem(f"image does not decode ({type(e).__name__}: {e})") from None
    if fmt not in FORMATS:
        raise ImageProblem(f"image format {fmt} is not accepted ({', '.join(FORMATS)})")
    return FORMATS[fmt]


def decode(data: bytes) -> Any:
    """An RGB ``PIL.Image.Image`` from checked image bytes."""
    img = _open(data)
    img.load()
    return img.convert("RGB")
