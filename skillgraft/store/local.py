"""A local directory as an object store: the embedded default.

Only plain files inside the root are objects. A symbolic link anywhere in a key's path (the object itself, or a
directory on the way to it), a FIFO, a device or a socket is refused with :class:`UnsafeFile`: never read, followed or
written through, so a link dropped into the landing zone cannot pull a file from outside the store into it. Reads
walk the path with ``O_NOFOLLOW`` directory handles (no check-then-open race); :meth:`LocalStore.keys` lists such
entries (a linked directory as one key, never descended into) so that the intake sees and reports them, and
:meth:`LocalStore.delete` removes a link itself, never what it points to.

Files are created ``0666 & ~umask`` and directories ``0777 & ~umask``, like any program's: with a group-writable
umask (``002``) a shared store is usable by the whole team.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skillgraft.store.base import RESERVED_SEGMENT_PREFIXES, KeyExists, KeyNotFound, UnsafeFile, check_key

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _what(mode: int, link_target: str | None = None) -> str | None:
    """How a non-plain, non-directory entry is described in errors; None for a plain file or a directory."""
    if stat.S_ISLNK(mode):
        return "a symbolic link" + (f" (to {link_target!r})" if link_target is not None else "")
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return None


class LocalStore:
    """Objects are files under ``root``; writes go to a temp file then appear atomically (link / rename)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()  # the root itself may be a link; nothing below it may
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    # --- refusing links and special files -------------------------------------------------------------------------

    def _unsafe(self, key: str, parts: list[str], i: int, st: os.stat_result, dir_fd: int | None = None) -> UnsafeFile:
        target = None
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(parts[i], dir_fd=dir_fd) if dir_fd is not None else os.readlink(
                    self.root.joinpath(*parts[: i + 1]))  # fmt: skip
            except OSError:
                target = None
        return UnsafeFile(self.url, key, _what(st.st_mode, target) or "not a plain file", at="/".join(parts[: i + 1]))

    def _check_path(self, key: str, *, final: bool = True) -> os.stat_result | None:
        """Refuse ``key`` (:class:`UnsafeFile`) when a directory on its path is a link, or (``final``) when the key
        itself is a link or a special file. Returns the key's own lstat, None when it does not exist."""
        parts = check_key(key).split("/")
        path = self.root
        for i, part in enumerate(parts):
            path = path / part
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None
            last = i == len(parts) - 1
            if stat.S_ISLNK(st.st_mode) and (final or not last):
                raise self._unsafe(key, parts, i, st)
            if last:
                if final and _what(st.st_mode) is not None:
                    raise self._unsafe(key, parts, i, st)
                return st
            if not stat.S_ISDIR(st.st_mode):
                return None  # a file where a directory should be: the key cannot exist
        return None

    def _open_parent(self, key: str) -> tuple[int, list[str]]:
        """A directory handle on the key's parent, reached without following any link (``O_NOFOLLOW`` at each
        step); raises :class:`KeyNotFound` or :class:`UnsafeFile`. The caller closes it."""
        parts = check_key(key).split("/")
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFound(self.url, key) from None
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    raise KeyNotFound(self.url, key) from None
                except OSError as e:
                    try:
                        st = os.lstat(part, dir_fd=fd)
                    except FileNotFoundError:
                        raise KeyNotFound(self.url, key) from None
                    if _what(st.st_mode) is not None:
                        raise self._unsafe(key, parts, i, st, fd) from None
                    if e.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise KeyNotFound(self.url, key) from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, parts

    def _read(self, key: str) -> bytes:
        dir_fd, parts = self._open_parent(key)
        try:
            name = parts[-1]
            try:
                st = os.lstat(name, dir_fd=dir_fd)
            except FileNotFoundError:
                raise KeyNotFound(self.url, key) from None
            if stat.S_ISDIR(st.st_mode):
                raise KeyNotFound(self.url, key)
            if _what(st.st_mode) is not None:  # refused before it is opened: opening a FIFO or device can block
                raise self._unsafe(key, parts, len(parts) - 1, st, dir_fd)
            try:  # O_NOFOLLOW: a link swapped in since the lstat fails here; O_NONBLOCK: a FIFO can't block
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            except FileNotFoundError:
                raise KeyNotFound(self.url, key) from None
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise self._unsafe(key, parts, len(parts) - 1, os.lstat(name, dir_fd=dir_fd), dir_fd) from None
                raise
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise KeyNotFound(self.url, key)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeFile(self.url, key, _what(st.st_mode) or "not a plain file")
            return f.read()

    # --- the interface --------------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self._read(key)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, _etag(data)

    def exists(self, key: str) -> bool:
        st = self._check_path(key)
        return st is not None and stat.S_ISREG(st.st_mode)

    def _tmp(self, key: str, path: Path, data: bytes) -> str:
        self._check_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)  # 0777 & ~umask
        self._check_path(key)  # a directory on the way replaced by a link meanwhile
        while True:
            tmp = str(path.parent / f".tmp-{secrets.token_hex(8)}.part")
            try:  # 0666 & ~umask (tempfile.mkstemp would make it 0600: unreadable by the rest of the team)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            except FileExistsError:
                continue
            break
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
        tmp = self._tmp(key, path, data)
        try:
            os.link(tmp, path, follow_symlinks=False)  # fails if the key exists: write-once, never half-written
        except FileExistsError:
            self._check_path(key)  # a link or FIFO under that name: say so rather than "already exists"
            raise KeyExists(self.url, key) from None
        finally:
            os.unlink(tmp)

    @contextmanager
    def _lock(self, key: str, path: Path) -> Iterator[None]:
        self._check_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent / f".lock-{path.name}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "r+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def replace_if(self, key: str, data: bytes, expected: str | None) -> bool:
        path = self._path(key)
        with self._lock(key, path):
            if expected is None:  # create only: link, like put_new, so a racing put_new can't be overwritten
                try:
                    self.put_new(key, data)
                except KeyExists:
                    return False
                return True
            try:
                current: str | None = _etag(self._read(key))
            except KeyNotFound:
                current = None
            if current != expected:
                return False
            tmp = self._tmp(key, path, data)
            os.replace(tmp, path)
            return True

    def delete(self, key: str) -> None:
        """Remove an object; a link or special file under the key is removed itself (what a link points to is never
        touched). The parent directories are reached without following links."""
        dir_fd, parts = self._open_parent(key)
        try:
            try:
                os.unlink(parts[-1], dir_fd=dir_fd)
            except FileNotFoundError:
                raise KeyNotFound(self.url, key) from None
            except IsADirectoryError:
                raise KeyNotFound(self.url, key) from None
        finally:
            os.close(dir_fd)

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix``, links and special files included (reading them is refused); a linked
        directory is one key, never walked into. Listing below a linked directory raises :class:`UnsafeFile`."""
        check_key(prefix, partial=True)
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if folder and not self._is_plain_dir(folder):
            return iter(())
        start = self.root / folder if folder else self.root
        found = []
        for dirpath, dirs, files in os.walk(start):  # followlinks=False: linked directories are listed, not entered
            names = files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]
            for name in names:
                if name.startswith(RESERVED_SEGMENT_PREFIXES):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    found.append(rel)
        return iter(sorted(found))

    def _is_plain_dir(self, folder: str) -> bool:
        """True when ``folder`` is a directory reached without links; raises :class:`UnsafeFile` for a link on the
        way (or at it)."""
        parts = folder.split("/")
        path = self.root
        for i, part in enumerate(parts):
            path = path / part
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
            if stat.S_ISLNK(st.st_mode):
                raise self._unsafe(folder + "/", parts, i, st)
            if not stat.S_ISDIR(st.st_mode):
                return False
        return True
