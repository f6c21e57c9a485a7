"""LocalStore against hostile entries in its directory (links, FIFOs) and with a shared umask (issue 15)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skillgraft.store import LocalStore
from skillgraft.store.base import KeyNotFound, UnsafeFile

SECRET = b"outside the store: must never be read through it\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    (d / "dir").mkdir(parents=True)
    (d / "secret.txt").write_bytes(SECRET)
    (d / "dir" / "inner.txt").write_bytes(SECRET)
    return d


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    store.put_new("incoming/qa/plain.jsonl", b"plain")
    return store


def test_a_link_to_a_file_outside_is_listed_but_never_read(store: LocalStore, outside: Path) -> None:
    os.symlink(outside / "secret.txt", store.root / "incoming/qa/evil.jsonl")
    assert list(store.keys("incoming/")) == ["incoming/qa/evil.jsonl", "incoming/qa/plain.jsonl"]
    for read in (store.get, store.get_with_etag, store.exists):
        with pytest.raises(UnsafeFile, match=r"'incoming/qa/evil\.jsonl' .* is a symbolic link \(to '.*secret\.txt'\)"):
            read("incoming/qa/evil.jsonl")
    assert store.get("incoming/qa/plain.jsonl") == b"plain"


def test_a_linked_directory_is_one_key_and_nothing_below_it_is_read_written_or_deleted(
    store: LocalStore, outside: Path
) -> None:
    os.symlink(outside / "dir", store.root / "incoming/qa/sub")
    assert "incoming/qa/sub" in list(store.keys("incoming/"))  # listed as itself, not walked into
    assert "incoming/qa/sub/inner.txt" not in list(store.keys("incoming/"))
    key = "incoming/qa/sub/inner.txt"
    for op in (store.get, store.exists, lambda k: store.put_new(k + ".new", b"x"), store.delete,
               lambda k: store.replace_if(k, b"x", None)):  # fmt: skip
        with pytest.raises(UnsafeFile, match=r"'incoming/qa/sub' on its path is a symbolic link"):
            op(key)
    with pytest.raises(UnsafeFile):
        list(store.keys("incoming/qa/sub/"))
    assert sorted(os.listdir(outside / "dir")) == ["inner.txt"]  # nothing written or removed outside
    assert (outside / "dir" / "inner.txt").read_bytes() == SECRET


def test_a_linked_top_level_folder_refuses_listing(store: LocalStore, outside: Path) -> None:
    os.symlink(outside, store.root / "tasks")
    with pytest.raises(UnsafeFile, match=r"'tasks' on its path is a symbolic link"):
        list(store.keys("tasks/"))
    assert "tasks" in list(store.keys())


def test_writing_over_a_planted_link_never_writes_through_it(store: LocalStore, outside: Path) -> None:
    os.symlink(outside / "secret.txt", store.root / "incoming/qa/champion.json")
    with pytest.raises(UnsafeFile):
        store.put_new("incoming/qa/champion.json", b"new")
    with pytest.raises(UnsafeFile):
        store.replace_if("incoming/qa/champion.json", b"new", "anything")
    assert (outside / "secret.txt").read_bytes() == SECRET


def test_delete_removes_the_link_itself_not_its_target(store: LocalStore, outside: Path) -> None:
    os.symlink(outside / "secret.txt", store.root / "incoming/qa/evil.jsonl")
    os.symlink(outside / "dir", store.root / "incoming/qa/sub")
    store.delete("incoming/qa/evil.jsonl")
    store.delete("incoming/qa/sub")
    assert list(store.keys("incoming/")) == ["incoming/qa/plain.jsonl"]
    assert (outside / "secret.txt").read_bytes() == SECRET and (outside / "dir" / "inner.txt").exists()
    with pytest.raises(KeyNotFound):
        store.delete("incoming/qa/evil.jsonl")


def test_a_fifo_is_refused_without_blocking(store: LocalStore) -> None:
    os.mkfifo(store.root / "incoming/qa/pipe.jsonl")  # opening it for reading would block forever
    with pytest.raises(UnsafeFile, match=r"is a FIFO"):
        store.get("incoming/qa/pipe.jsonl")
    store.delete("incoming/qa/pipe.jsonl")
    assert not (store.root / "incoming/qa/pipe.jsonl").exists()


def test_a_store_root_that_is_itself_a_link_still_works(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    store = LocalStore(tmp_path / "alias")
    store.put_new("a/b.txt", b"ok")
    assert store.get("a/b.txt") == b"ok" and list(store.keys()) == ["a/b.txt"]


# --- permissions ----------------------------------------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    try:
        yield set_
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o002, 0o664, 0o775), (0o022, 0o644, 0o755),
                                                            (0o077, 0o600, 0o700)])  # fmt: skip
def test_files_and_folders_follow_the_umask(tmp_path: Path, umask, mask: int, file_mode: int, dir_mode: int) -> None:
    umask(mask)
    store = LocalStore(tmp_path / "store")
    store.put_new("models/demo/versions/v1/manifest.json", b"{}")
    assert store.replace_if("models/demo/champion.json", b"v1", None)
    _, etag = store.get_with_etag("models/demo/champion.json")
    assert store.replace_if("models/demo/champion.json", b"v2", etag)  # the replacing write, too
    for key in ("models/demo/versions/v1/manifest.json", "models/demo/champion.json"):
        assert oct(_mode(store.root / key)) == oct(file_mode), key
    assert oct(_mode(store.root / "models/demo/.lock-champion.json")) == oct(file_mode)
    for folder in ("models", "models/demo", "models/demo/versions", "models/demo/versions/v1"):
        assert oct(_mode(store.root / folder)) == oct(dir_mode), folder
