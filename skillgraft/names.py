"""Names that become paths or object keys: one checker, used everywhere a user-supplied name enters the store."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class InvalidName(ValueError):
    """A model, task or version name that cannot safely become a path or an object key."""


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe name for a ``kind`` (model, task, version...), else raise :class:`InvalidName`.

    Safe: 1-64 characters of lower-case letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit, and
    never ``..`` anywhere — so it can't escape its folder on a local store nor make an odd S3 key.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise InvalidName(
            f"invalid {kind} name {value!r}: use 1-64 characters of a-z, 0-9, '_', '.', '-', starting with a letter "
            f"or digit, with no '..' (it becomes a folder / object key)"
        )
    return value
