"""The key index: the example keys of a task's accepted batches, kept compact for the leakage checks.

An example's key is the first :data:`KEY_HEX` hex digits of its hash (:func:`skillgraft.data.split.example_key`), i.e.
64 bits. Every accepted batch stores the keys of its two splits beside them (``keys.eval`` and ``keys.train``: sorted,
distinct, little-endian uint64, 8 bytes per example, checksummed in ``batch.json`` like every file of the batch), so
checking a new file against a task's history reads 8 bytes per earlier example instead of parsing every split again.

:class:`KeyIndex` is a read-only mapping ``key (16 hex digits) -> where it was seen`` over sorted numpy arrays (about
12 bytes an entry); lookups of a whole chunk of keys are vectorised (:meth:`KeyIndex.found`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

KEY_HEX = 16
"""Hex digits of an example's hash kept in the ``key`` column and in leakage checks (64 bits)."""
KEY_DTYPE = np.dtype("<u8")


def key_values(keys: Iterable[str]) -> np.ndarray:
    """16-hex-digit keys as uint64 values, in order."""
    return np.fromiter((int(k, 16) for k in keys), dtype=np.uint64)


def key_text(value: int) -> str:
    return f"{int(value):0{KEY_HEX}x}"


def key_file_bytes(values: np.ndarray) -> bytes:
    """The stored form of a split's keys: sorted, distinct, little-endian uint64."""
    return np.unique(values.astype(np.uint64)).astype(KEY_DTYPE).tobytes()


def read_key_file(data: bytes, *, where: str) -> np.ndarray:
    if len(data) % KEY_DTYPE.itemsize:
        raise ValueError(f"{where}: {len(data)} bytes is not a whole number of 8-byte keys")
    return np.frombuffer(data, dtype=KEY_DTYPE).astype(np.uint64)


class KeyIndex(Mapping[str, str]):
    """Keys -> a label (the batch that holds them, e.g. ``"3e75a4fbffb52e1b of guard 'facts'"``).

    Built from ``(keys, label)`` parts, earliest first: a key in several parts keeps the first part's label (the
    batch that held it first).
    """

    def __init__(self, parts: Sequence[tuple[np.ndarray, str]] = ()) -> None:
        self._labels = [label for _, label in parts]
        if parts:
            keys = np.concatenate([np.asarray(k, dtype=np.uint64) for k, _ in parts])
            owner = np.concatenate([np.full(len(k), i, dtype=np.int32) for i, (k, _) in enumerate(parts)])
        else:
            keys, owner = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int32)
        self._keys, first = np.unique(keys, return_index=True)  # the first occurrence: the earliest part
        self._owner = owner[first]

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return (key_text(v) for v in self._keys)

    def _position(self, value: int) -> int | None:
        i = int(np.searchsorted(self._keys, np.uint64(value)))
        return i if i < len(self._keys) and int(self._keys[i]) == value else None

    def __getitem__(self, key: str) -> str:
        try:
            i = self._position(int(key, 16))
        except (TypeError, ValueError):
            i = None
        if i is None:
            raise KeyError(key)
        return self._labels[self._owner[i]]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            return self._position(int(key, 16)) is not None
        except ValueError:
            return False

    def found(self, values: np.ndarray) -> np.ndarray:
        """A boolean mask: which of ``values`` (uint64) are in the index."""
        values = np.asarray(values, dtype=np.uint64)
        if not len(self._keys):
            return np.zeros(len(values), dtype=bool)
        i = np.minimum(np.searchsorted(self._keys, values), len(self._keys) - 1)
        return self._keys[i] == values

    def restrict(self, keys: Sequence[str]) -> dict[str, str]:
        """The entries for ``keys`` only (what a chunk of examples can collide with): small, whatever the index."""
        distinct = list(dict.fromkeys(keys))
        hit = self.found(key_values(distinct))
        return {k: self[k] for k, h in zip(distinct, hit) if h}


def restrict(existing: Mapping[str, str] | Iterable[str], keys: Sequence[str]) -> dict[str, str] | set[str]:
    """``existing`` cut down to ``keys``: a mapping stays a mapping (its labels name batches in messages)."""
    if isinstance(existing, KeyIndex):
        return existing.restrict(keys)
    if isinstance(existing, Mapping):
        return {k: existing[k] for k in dict.fromkeys(keys) if k in existing}
    pool = existing if isinstance(existing, (set, frozenset)) else set(existing)
    return {k for k in keys if k in pool}
