"""The champion log of one model: the champion pointer (champion.json) and the append-only history (history.jsonl),
kept together because the crash-recovery protocol couples them: the pointer moves first and carries what its history
entry needs, so a missing entry is rebuilt from the pointer (``recovered``) and a missing pointer from the history
(:meth:`ChampionLog.repair`). Promote, reject, record, rollback and repair live here; the versions they name are
checked through the :class:`~skillgraft.registry.versions.VersionStore`.
"""

from __future__ import annotations

import json
import random
import re
import time
from typing import Any

from pydantic import ValidationError

from skillgraft import layout
from skillgraft.names import check_name
from skillgraft.refs import utcnow
from skillgraft.registry.errors import (
    ChampionMissing,
    NoChampion,
    NoPreviousChampion,
    PromotionConflict,
    PromotionRefused,
    RegistryError,
    VersionNotFound,
)
from skillgraft.registry.records import CHECK_ACTIONS, POINTER_ACTIONS, READ_NOW, ChampionPointer, HistoryEntry
from skillgraft.registry.versions import VersionStore
from skillgraft.store.base import KeyNotFound, ObjectStore

_ACTION = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_HISTORY_ATTEMPTS = 50


def _logged_as_recovered(log: bytes, entry: HistoryEntry) -> bool:
    """Does ``log`` hold a recovered entry for the same pointer move (action, version, time) as ``entry``?"""
    for raw in log.splitlines():
        if b'"recovered":true' not in raw:
            continue
        try:
            other = json.loads(raw)
        except ValueError:
            continue
        if (other.get("action"), other.get("version"), other.get("at")) == (entry.action, entry.version, entry.at):
            return True
    return False


class ChampionLog:
    """The champion pointer and the history of one model (see the module docstring). Cheap to construct; no cache."""

    def __init__(self, store: ObjectStore, model: str, *, actor: str, versions: VersionStore) -> None:
        self.store = store
        self.model = check_name("model", model)
        self.actor = actor
        self.versions = versions

    # --- keys ---------------------------------------------------------------------------------------------------------

    @property
    def _champion_key(self) -> str:
        return layout.champion_key(self.model)

    @property
    def _history_key(self) -> str:
        return layout.history_key(self.model)

    def _where(self, version: str | None = None) -> str:
        return f"{self.model}@{version}" if version else f"model {self.model!r}"

    # --- champion -----------------------------------------------------------------------------------------------------

    def champion(self) -> ChampionPointer | None:
        return self.champion_with_etag()[0]

    def champion_with_etag(self) -> tuple[ChampionPointer | None, str | None]:
        """The pointer and the etag to pass to :meth:`promote` / :meth:`rollback` (``(None, None)``: no champion)."""
        try:
            raw, etag = self.store.get_with_etag(self._champion_key)
        except KeyNotFound:
            return None, None
        try:
            return ChampionPointer.model_validate_json(raw), etag
        except ValidationError as err:
            raise RegistryError(
                f"{self._champion_key} in {self.store.url} is unreadable ({err.errors()[0]['msg']}): it is written "
                f"only by the registry, so it was edited by hand or damaged. Restore it from the store's versioning "
                f"or the last promote/rollback entry in {self._history_key}; nothing was changed"
            ) from None

    def require_champion(self) -> ChampionPointer:
        """The champion pointer; :class:`ModelNotFound` / :class:`NoChampion` when there is none."""
        self.versions.require_info()
        pointer = self.champion()
        if pointer is None:
            self.require_intact_pointer()
            raise NoChampion(f"model {self.model!r} has no champion in {self.store.url}: nothing was promoted yet")
        return pointer

    def lost_champion(self, history: list[HistoryEntry] | None = None) -> HistoryEntry | None:
        """When ``champion.json`` is missing although the history records pointer moves: the last of those moves
        (the champion the store had), else None. A missing pointer with promotions in the history is damage (a
        deleted or lost object), not "no champion": training from the bare base would silently restart the lineage."""
        if self.store.exists(self._champion_key):
            return None
        history = self.history() if history is None else history
        return next((e for e in reversed(history) if e.action in POINTER_ACTIONS), None)

    def require_intact_pointer(self, history: list[HistoryEntry] | None = None) -> None:
        """:class:`ChampionMissing` when :meth:`lost_champion` finds the pointer gone; else nothing."""
        if (last := self.lost_champion(history)) is not None:
            raise ChampionMissing(self._missing_message(last), last=last)

    def _missing_message(self, last: HistoryEntry) -> str:
        return (
            f"{self._champion_key} is missing from {self.store.url}, but {self._history_key} records champions (the "
            f"last: {last.action} of {last.version} at {last.at} by {last.actor}): the champion pointer was deleted or "
            f"lost. Refusing to train, promote or roll back, which would restart the lineage from the bare base. The "
            f"versions and the history are intact; rebuild the pointer from the history with `skillgraft repair` "
            f"(champion {last.version}, or name another former champion)"
        )

    def _read_pointer(
        self, expected_etag: Any, doing: str, history: list[HistoryEntry] | None = None
    ) -> tuple[ChampionPointer | None, str | None]:
        current, etag = self.champion_with_etag()
        if current is None:
            self.require_intact_pointer(history)
        if expected_etag is not READ_NOW and expected_etag != etag:
            raise PromotionConflict(self._conflict_message(current, doing), current=current)
        return current, etag

    def _conflict_message(self, current: ChampionPointer | None, doing: str) -> str:
        now = (
            f"it is now {current.version} (since {current.since}, by {current.actor}: {current.reason})"
            if current
            else "it has no champion now"
        )
        return (
            f"the champion of {self.model!r} changed before {doing}: {now}. Nothing was changed; re-run the gate "
            f"against the current champion, or record the candidate as superseded"
        )

    def _move_pointer(self, pointer: ChampionPointer, etag: str | None, doing: str) -> None:
        data = pointer.model_dump_json(indent=2).encode()
        if self.store.replace_if(self._champion_key, data, etag):
            return
        try:
            now, _ = self.store.get_with_etag(self._champion_key)
        except KeyNotFound:
            now = None
        if now == data:  # our write landed; only its response was lost (and a retry hit the precondition)
            return
        current = ChampionPointer.model_validate_json(now) if now is not None else None
        raise PromotionConflict(self._conflict_message(current, doing), current=current)

    def promote(
        self,
        version: str,
        *,
        reason: str,
        actor: str | None = None,
        expected_etag: str | None = READ_NOW,
        force: bool = False,
        move_id: str | None = None,
    ) -> ChampionPointer:
        """Make ``version`` the champion.

        Refuses (:class:`VersionNotValid`) a version that is not complete with every checksum valid. Pass the
        ``expected_etag`` from :meth:`champion_with_etag` that the gate compared against (``None``: "there was no
        champion"); when the pointer moved since, :class:`PromotionConflict` carries the current champion and nothing
        is written. A version whose last history decision is ``reject`` needs ``force=True``; the history entry
        records ``forced``.

        ``move_id`` makes a retried call idempotent: when the pointer already names ``version`` with this
        ``move_id``, it is this caller's own earlier attempt that landed (its answer, or the history append after it,
        was lost), so the history entry is completed and that pointer returned instead of a conflict.
        """
        actor = actor or self.actor
        doing = f"promoting {version}"
        if move_id is not None:
            current = self.champion()
            if current is not None and current.version == version and current.move_id == move_id:
                self._append(self._move_entry(current), once=True)
                return current
        self.versions.require_loadable(version, "promote it")
        current, etag = self._read_pointer(expected_etag, doing)
        if current is not None and current.version == version:
            raise RegistryError(f"{self._where(version)} is already the champion; nothing was changed")
        history = self.history()
        if not force:
            last = next((e for e in reversed(history) if e.version == version), None)
            if last is not None and last.action == "reject":
                raise PromotionRefused(
                    f"{self._where(version)} was rejected ({last.at}, by {last.actor}: {last.reason}); pass "
                    f"force=True to promote it anyway (recorded as forced). Nothing was changed"
                )
        previous = current.version if current else None
        self._log_unlogged_move(current, history)
        pointer = ChampionPointer(
            version=version, previous=previous, since=utcnow(), reason=reason, actor=actor, forced=force,
            move_id=move_id,
        )  # fmt: skip
        self._move_pointer(pointer, etag, doing)
        self._append(self._move_entry(pointer))
        return pointer

    @staticmethod
    def _move_entry(pointer: ChampionPointer) -> HistoryEntry:
        """The history entry of a promotion, built only from its pointer: a retry that finishes an interrupted
        promotion writes the very line the first attempt would have (so ``_append(once=True)`` never doubles it)."""
        return HistoryEntry.model_validate(
            {
                "action": "promote",
                "version": pointer.version,
                "from": pointer.previous,
                "reason": pointer.reason,
                "actor": pointer.actor,
                "at": pointer.since,
                "forced": pointer.forced,
            }
        )

    def reject(self, version: str, *, reason: str, actor: str | None = None) -> HistoryEntry:
        """Record that ``version`` was not promoted; the champion is unchanged."""
        return self.record("reject", version, reason, actor)

    def record(self, action: str, version: str, reason: str, actor: str | None = None, **extra: Any) -> HistoryEntry:
        """Append a history entry that moves nothing (``reject``, ``superseded``, ``post-check-failed``...).

        ``promote`` and ``rollback`` are written only by :meth:`promote` / :meth:`rollback`, with the pointer move.
        """
        if not isinstance(action, str) or not _ACTION.fullmatch(action):
            raise RegistryError(f"invalid history action {action!r}: use a-z, 0-9, '_', '-'; nothing was written")
        if action in POINTER_ACTIONS:
            raise RegistryError(f"{action!r} entries are written by Registry.{action}() with the pointer move")
        if clash := sorted(set(extra) & (set(HistoryEntry.model_fields) | {"from"})):
            raise RegistryError(f"extra history fields {clash} clash with standard ones; nothing was written")
        check_name("version", version)
        if not self.versions.exists(version):
            raise VersionNotFound(
                f"{self._where(version)} does not exist; no {action!r} entry written", version=version
            )
        entry = HistoryEntry.model_validate(
            {
                "action": action,
                "version": version,
                "reason": reason,
                "actor": actor or self.actor,
                "at": utcnow(),
                **extra,
            }
        )
        self._append(entry)
        return entry

    def rollback(
        self,
        to: str | None = None,
        *,
        reason: str,
        actor: str | None = None,
        expected_etag: str | None = READ_NOW,
        force: bool = False,
    ) -> ChampionPointer:
        """Move the champion back to a former champion: ``to``, or by default the current pointer's ``previous``.

        The new pointer's ``previous`` is what ``to`` had as ``previous`` when it last became champion, so a
        second rollback goes further back instead of bouncing (see the module docstring). Raises
        :class:`NoPreviousChampion` when there is nothing to go back to, :class:`VersionNotValid` when the target is
        not complete and valid, :class:`PromotionConflict` when the pointer moved; in each case nothing is changed.

        A target that was champion only through forced promotions (every promotion of it in the history is
        ``forced``) is refused with :class:`PromotionRefused` unless ``force=True``; the rollback is then recorded as
        forced too: going back to it overrides the gate again.
        """
        actor = actor or self.actor
        current, etag = self._read_pointer(expected_etag, "rolling back")
        if current is None:
            raise NoPreviousChampion(
                f"model {self.model!r} has no champion, so nothing to roll back; nothing was changed"
            )
        target = to if to is not None else current.previous
        if target is None:
            raise NoPreviousChampion(
                f"{self._where(current.version)} is champion with no previous champion recorded, so there is nothing "
                f"to roll back to; nothing was changed. Name a former champion (`skillgraft rollback VERSION`), or "
                f"promote another version (`skillgraft promote VERSION`)"
            )
        check_name("version", target)
        if target == current.version:
            raise RegistryError(f"{self._where(target)} is already the champion; nothing was changed")
        if not self.versions.exists(target):
            raise VersionNotFound(
                f"{self._where(target)} does not exist in {self.store.url}; nothing was changed", version=target
            )
        history = self.history()
        was_champion, previous = self._previous_when_champion(target, current, history)
        if not was_champion:
            raise RegistryError(
                f"{self._where(target)} was never champion, so it is not a rollback target; promote it instead "
                f"(`skillgraft promote {target}`, with --force if the gate rejected it). Nothing was changed"
            )
        promotions = [e for e in history if e.version == target and e.action == "promote"]
        forced = bool(promotions) and all(e.forced for e in promotions)
        if forced and not force:
            last = promotions[-1]
            raise PromotionRefused(
                f"{self._where(target)} was champion only through a forced promotion ({last.at}, by {last.actor}: "
                f"{last.reason}), past the gate; rolling back to it overrides the gate again, so it needs force "
                f"(recorded as forced). Nothing was changed"
            )
        self.versions.require_loadable(target, "roll back to it")
        self._log_unlogged_move(current, history)
        pointer = ChampionPointer(
            version=target, previous=previous, since=utcnow(), reason=reason, actor=actor, action="rollback",
            forced=forced,
        )  # fmt: skip
        self._move_pointer(pointer, etag, f"rolling back to {target}")
        fields: dict[str, Any] = {
            "action": "rollback",
            "version": target,
            "from": current.version,
            "previous": previous,
            "reason": reason,
            "actor": actor,
            "at": pointer.since,
        }
        self._append(HistoryEntry.model_validate({**fields, **({"forced": True} if forced else {})}))
        return pointer

    def _previous_when_champion(
        self, target: str, current: ChampionPointer | None, history: list[HistoryEntry]
    ) -> tuple[bool, str | None]:
        """Was ``target`` ever champion, and what was its pointer's ``previous`` the last time it became champion?"""
        for entry in reversed(history):
            if entry.version != target:
                continue
            if entry.action == "promote":
                return True, entry.from_version
            if entry.action in ("rollback", "repair"):
                return True, entry.previous
        # The pointer names it as previous but history lacks the entry (a crash between move and append).
        return (True, None) if current is not None and current.previous == target else (False, None)

    def repair(self, to: str | None = None, *, reason: str, actor: str | None = None) -> ChampionPointer:
        """Rebuild a missing ``champion.json`` from the history (see :meth:`lost_champion`): the champion the last
        pointer move in the history set, or ``to``, a former champion. Its ``previous`` comes from the history as
        for a rollback. The pointer is written only if still absent; the history records a ``repair``.

        Raises :class:`RegistryError` when the pointer is present or the history records no champion (nothing to
        rebuild), :class:`VersionNotValid` when the target can't be loaded; nothing is changed in each case.
        """
        actor = actor or self.actor
        self.versions.require_info()
        history = self.history()
        if self.store.exists(self._champion_key):
            current = self.champion()
            raise RegistryError(
                f"{self._champion_key} is present (champion {current.version if current else '?'}); nothing to "
                f"repair, nothing was changed. To move the champion use promote or rollback"
            )
        last = self.lost_champion(history)
        if last is None:
            raise RegistryError(
                f"the history of {self.model!r} records no champion, so there is no pointer to rebuild: nothing was "
                f"ever promoted. Nothing was changed"
            )
        target = check_name("version", to) if to is not None else last.version
        was_champion, previous = self._previous_when_champion(target, None, history)
        if not was_champion:
            raise RegistryError(
                f"{self._where(target)} was never champion according to {self._history_key}; repair restores a former "
                f"champion (the last one was {last.version}). Nothing was changed"
            )
        self.versions.require_loadable(target, "make it champion again")
        promotions = [e for e in history if e.version == target and e.action == "promote"]
        forced = bool(promotions) and all(e.forced for e in promotions)
        why = f"{reason}; {layout.CHAMPION} was missing, rebuilt from the history (last move: {last.action} of " \
              f"{last.version} at {last.at})"  # fmt: skip
        pointer = ChampionPointer(version=target, previous=previous, since=utcnow(), reason=why, actor=actor,
                                  action="repair", forced=forced)  # fmt: skip
        self._move_pointer(pointer, None, f"repairing the champion pointer with {target}")
        fields: dict[str, Any] = {"action": "repair", "version": target, "from": None, "previous": previous,
                                  "reason": why, "actor": actor, "at": pointer.since}  # fmt: skip
        self._append(HistoryEntry.model_validate({**fields, **({"forced": True} if forced else {})}))
        return pointer

    def unchecked_champion(
        self, current: ChampionPointer | None = READ_NOW, history: list[HistoryEntry] | None = None
    ) -> ChampionPointer | None:
        """The champion pointer when the champion was *promoted* and the history records no post-promotion check of
        it since (a run or a ``promote`` stopped between moving the pointer and the check), else None. Rollbacks
        and repairs return to a former champion and need no check. See :data:`CHECK_ACTIONS`."""
        if current is READ_NOW:
            current = self.champion()
        if current is None or current.action != "promote":
            return None
        history = self.history() if history is None else history
        start = next(
            (i for i in range(len(history) - 1, -1, -1)
             if history[i].action in POINTER_ACTIONS and (history[i].version, history[i].at) == (current.version, current.since)),
            len(history),
        )  # fmt: skip
        if any(e.version == current.version and e.action in CHECK_ACTIONS for e in history[start:]):
            return None
        return current

    # --- history ------------------------------------------------------------------------------------------------------

    def history(self) -> list[HistoryEntry]:
        try:
            raw = self.store.get(self._history_key)
        except KeyNotFound:
            return []
        entries = []
        for number, line in enumerate(raw.decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(HistoryEntry.model_validate_json(line))
            except ValidationError as err:
                raise RegistryError(
                    f"{self._history_key} line {number} is not a history entry ({err.errors()[0]['msg']}); "
                    f"fix or remove that line (the log is append-only: nothing else edits it)"
                ) from None
        return entries

    def unlogged_move(
        self, current: ChampionPointer | None = READ_NOW, history: list[HistoryEntry] | None = None
    ) -> HistoryEntry | None:
        """The history entry for the current pointer when the log lacks it (a writer stopped between moving the
        pointer and appending to the log), else None. The entry is rebuilt from the pointer, marked ``recovered``."""
        if current is READ_NOW:
            current = self.champion()
        if current is None:
            return None
        history = self.history() if history is None else history
        moves = [e for e in history if e.action in POINTER_ACTIONS]
        if moves and (moves[-1].version, moves[-1].at) == (current.version, current.since):
            return None
        fields: dict[str, Any] = {
            "action": current.action,
            "version": current.version,
            "from": moves[-1].version if moves else None,
            "reason": current.reason,
            "actor": current.actor,
            "at": current.since,
            "recovered": True,
        }
        if current.action in ("rollback", "repair"):
            fields["previous"] = current.previous
        if current.forced:
            fields["forced"] = True
        return HistoryEntry.model_validate(fields)

    def _log_unlogged_move(self, current: ChampionPointer | None, history: list[HistoryEntry]) -> None:
        """Before moving the pointer: append the entry an interrupted writer left out (once, even when racing)."""
        if (entry := self.unlogged_move(current, history)) is not None:
            self._append(entry, once=True)

    def _append(self, entry: HistoryEntry, *, once: bool = False) -> None:
        """Append one line; ``once``: not if the log holds that exact line already (recovered entries are built
        deterministically from the pointer, so two writers repairing the same gap write one line)."""
        line = entry.to_line()
        for attempt in range(_HISTORY_ATTEMPTS):
            try:
                data, etag = self.store.get_with_etag(self._history_key)
            except KeyNotFound:
                data, etag = b"", None
            if (attempt or once) and line in data:  # an earlier attempt landed (or another writer's, for `once`)
                return
            if entry.action in POINTER_ACTIONS and _logged_as_recovered(data, entry):
                return  # another writer saw our pointer move before we logged it and logged it for us
            if self.store.replace_if(self._history_key, data + line, etag):
                return
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # another writer appended: re-read and retry
        raise RegistryError(
            f"could not append to {self._history_key} after {_HISTORY_ATTEMPTS} attempts (heavy contention); any "
            f"champion move already made stands, but this entry was not logged: {line.decode().strip()}"
        )
