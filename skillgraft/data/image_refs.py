"""Image references of vision-language data: finding the images a data file names (beside it on disk, in its
landing folder, or already held by the task), checking them, and storing and reading the accepted ones by content.

What a reference may be and how an image is checked is :mod:`skillgraft.data.images`; the keys are
:mod:`skillgraft.layout`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from skillgraft import layout
from skillgraft.data import images
from skillgraft.data.errors import BatchCorrupted
from skillgraft.data.io import MAX_ISSUES, DataError, ImageError, Record
from skillgraft.data.objects import put_same
from skillgraft.names import check_name
from skillgraft.store.base import KeyNotFound, ObjectStore, UnsafeFile

Reader = Callable[[str], "bytes | None"]
"""Image bytes for a reference, or None when there is no such image."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageRefs:
    """The images of every task's data on one object store. Cheap to construct; holds no cache."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # --- reading the images a data file references --------------------------------------------------------------------

    def local_reader(self, task: str, folder: Path) -> Reader:
        """Image bytes for a reference in a local data file: the file it names inside ``folder``, else (a content
        reference) an image the task already holds; None when neither exists."""
        stored = self.landing_reader(task)

        def read(ref: str) -> bytes | None:
            target = (folder / ref).resolve()
            if target.is_relative_to(folder) and target.is_file():
                return target.read_bytes()
            return stored(ref) if images.is_content_ref(ref) else None

        return read

    def landing_reader(self, task: str) -> Reader:
        """Image bytes for a reference in a landed file: a content reference the task already holds, else
        ``incoming/<task>/<ref>``; None when neither exists."""

        def read(ref: str) -> bytes | None:
            keys = [layout.task_image_key(task, ref)] if images.is_content_ref(ref) else []
            for key in [*keys, layout.landed_key(task, ref)]:
                try:
                    return self.store.get(key)
                except KeyNotFound:
                    continue
                except UnsafeFile as e:
                    where = "it is" if e.at == key else f"{e.at} on its path is"
                    raise images.ImageProblem(
                        f"image {ref!r} is refused: {where} {e.what} in the store, never followed or read; put the "
                        "image file itself there"
                    ) from None
            return None

        return read

    def resolve(
        self, task: str, file: str, records: list[Record], read: Reader, blobs: dict[str, bytes] | None
    ) -> list[Record]:
        """Records with every image reference replaced by its content reference; the images' bytes go to ``blobs``
        (None: checked, not kept). Raises :class:`ImageError` listing every missing, unsafe or broken image (file,
        line, field)."""
        errors: list[DataError] = []
        by_ref: dict[str, str] = {}  # reference -> content reference
        bad: dict[str, tuple[str, str]] = {}  # reference -> (where first seen, problem)
        out = []
        for rec in records:
            ref = rec.example.image
            if ref is None:
                out.append(rec)
                continue
            if ref not in by_ref and ref not in bad:
                try:
                    images.check_ref(ref)
                    body = read(ref)
                    if body is None:
                        raise images.ImageProblem(
                            f"image {ref!r} not found: it must sit beside the data file (in "
                            f"{layout.landing_prefix(task)} of the store, or in the data file's folder for "
                            "`skillgraft submit`)"
                        )
                    suffix = images.inspect(body, ref)
                    content = images.content_ref(body, suffix)
                    if images.is_content_ref(ref) and images.content_hash(ref) != images.content_hash(content):
                        raise images.ImageProblem(f"image {ref!r} does not match its own sha256 (it was modified)")
                    by_ref[ref] = content
                    if blobs is not None:
                        blobs[content] = body
                except images.ImageProblem as e:
                    bad[ref] = (rec.location(file), str(e))
                    errors.append(ImageError(file, str(e), line=rec.line, field="image", unit=rec.unit))
                    continue
            if ref in bad:
                where, problem = bad[ref]
                errors.append(
                    ImageError(file, f"{problem} (as at {where})", line=rec.line, field="image", unit=rec.unit)
                )
            else:
                out.append(rec._replace(example=rec.example.model_copy(update={"image": by_ref[ref]})))
        if errors:
            first = errors[0]
            first.more = errors[1:MAX_ISSUES]
            first.uncounted = max(0, len(errors) - MAX_ISSUES)
            raise first
        return out

    # --- accepted images ----------------------------------------------------------------------------------------------

    def store_accepted(self, task: str, blobs: dict[str, bytes]) -> None:
        """Store the images of an accepted batch by content (``tasks/<task>/images/<sha256>.<ext>``), each read back;
        an image already stored is the same bytes."""
        for ref, body in blobs.items():
            put_same(self.store, layout.task_image_key(task, ref), body, verify=True)

    def load(self, task: str, ref: str) -> bytes:
        """The bytes of an accepted image (a content reference from a split), checked against their sha256."""
        check_name("task", task)
        images.content_hash(ref)  # only content references are read from the store: nothing else becomes a key
        key = layout.task_image_key(task, ref)
        data = self.store.get(key)
        if _sha256(data) != images.content_hash(ref):
            raise BatchCorrupted(
                f"{key} does not match the sha256 in its name (got {_sha256(data)[:12]}...): the stored image was "
                "modified; restore it or re-submit the batch that brought it"
            )
        return data
