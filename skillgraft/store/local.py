"""A local directory as an object store: the embedded default."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skillgraft.store.base import RESERVED_SEGMENT_PREFIXES, KeyExists, KeyNotFound, check_key


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStore:
    """Objects are files under ``root``; writes go to a temp file then appear atomically (link / rename)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(self.url, key) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, _etag(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _tmp(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def put_new(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._tmp(path, data)
        try:
            os.link(tmp, path)  # fails if the key exists: write-once, and never half-written
        except FileExistsError:
            raise KeyExists(self.url, key) from None
        finally:
            os.unlink(tmp)

    @contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".lock-{path.name}", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def replace_if(self, key: str, data: bytes, expected: str | None) -> bool:
        path = self._path(key)
        with self._lock(path):
            if expected is None:  # create only: link, like put_new, so a racing put_new can't be overwritten
                try:
                    self.put_new(key, data)
                except KeyExists:
                    return False
                return True
            try:
                current: str | None = _etag(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != expected:
                return False
            tmp = self._tmp(path, data)
            os.replace(tmp, path)
            return True

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise KeyNotFound(self.url, key) from None

    def keys(self, prefix: str = "") -> Iterator[str]:
        check_key(prefix, partial=True)
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return iter(())
        found = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(RESERVED_SEGMENT_PREFIXES):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    found.append(rel)
        return iter(sorted(found))
