"""Promote → post-promotion check → automatic rollback: the one protocol, run by the retrain flow and by the CLI.

The flow (``flows/retrain.py``) passes its Prefect tasks as the three actions, so each stays a task run in the UI;
``skillgraft promote`` and ``skillgraft check`` pass the plain steps. What happens after which outcome — no rollback
without an earlier champion, a rollback that finds the champion already moved on leaves the newer promotion
standing — is decided here and nowhere else. :func:`gate_refusal` says whether a stored gate decision allows a
promotion over today's champion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from skillgraft import layout
from skillgraft.registry import PromotionConflict

if TYPE_CHECKING:
    from skillgraft.registry import ChampionPointer, Registry

Status = Literal["promoted", "superseded", "check-failed", "rolled-back", "rollback-skipped"]


class PromotionResult(BaseModel):
    """What moving the pointer did: ``promoted`` False when the champion had moved on (``reason`` says to what)."""

    promoted: bool
    champion: str | None
    previous: str | None
    reason: str


class CheckResult(BaseModel):
    """The post-promotion check of ``version``: loaded back and smoke-scored (``scores``), ``reasons`` either way."""

    ok: bool
    version: str
    reasons: list[str]
    scores: dict[str, float]
    smoke: bool = True  # False: loaded back only (a version the gate never scored has nothing to compare with)


class Settled(BaseModel):
    """Where a promotion ended: the status, the champion it leaves, and why (empty when promoted and checked)."""

    status: Status
    version: str
    champion: str | None
    previous: str | None
    check: CheckResult | None = None
    notes: list[str] = []


def promote_checked(
    version: str,
    promote: Callable[[], PromotionResult],
    check: Callable[[str, str | None], CheckResult] | None,
    rollback: Callable[[CheckResult, str], str],
) -> Settled:
    """Move the pointer to ``version`` (``promote``), then :func:`settle` it. ``check=None``: the caller asked for no
    check. A promotion the champion's move made moot is ``superseded``: ``version`` the candidate, ``champion`` the
    version that stands."""
    moved = promote()
    if not moved.promoted:
        return Settled(status="superseded", version=version, champion=moved.champion,
                       previous=moved.previous, notes=[moved.reason])  # fmt: skip
    assert moved.champion is not None
    if check is None:
        return Settled(status="promoted", version=moved.champion, champion=moved.champion, previous=moved.previous)
    return settle(moved.champion, moved.previous, check, rollback)


def settle(
    version: str,
    previous: str | None,
    check: Callable[[str, str | None], CheckResult],
    rollback: Callable[[CheckResult, str], str],
) -> Settled:
    """Check ``version``, the champion that ``previous`` was champion before; roll back to ``previous`` if it fails.

    A failed check with no earlier champion leaves ``version`` in place (``check-failed``: there is nothing safer to
    go back to). A rollback that finds the champion already moved on (another promotion landed after this one) is
    not done (``rollback-skipped``): the newer promotion stands and the failure is in the history.
    """
    checked = check(version, previous)
    base = {"version": version, "previous": previous, "check": checked}
    if checked.ok:
        return Settled(status="promoted", champion=version, **base)
    if previous is None:
        return Settled(status="check-failed", champion=version, notes=[*checked.reasons, "no earlier champion to roll back to"], **base)  # fmt: skip
    try:
        back = rollback(checked, previous)
    except PromotionConflict as e:
        current = e.current.version if e.current else None
        return Settled(status="rollback-skipped", champion=current, **base,
                       notes=[*checked.reasons, f"not rolled back: {e}"])  # fmt: skip
    return Settled(status="rolled-back", champion=back, notes=list(checked.reasons), **base)


def gate_refusal(reg: Registry, version: str, current: ChampionPointer | None) -> str | None:
    """Why ``version``'s stored gate decision does not allow promoting it over ``current`` (None: it does).

    The decision must exist, be for this version, say promote, and have been made against the current champion
    (``base`` when there is none): a decision against an older champion says nothing about the current one.
    """
    from pydantic import ValidationError

    from skillgraft.gate import Decision
    from skillgraft.store import KeyNotFound

    try:
        decision = Decision.model_validate_json(reg.read_attachment(version, layout.DECISION))
    except KeyNotFound:
        return f"{version} has no stored gate decision ({layout.DECISION}): it was never gated"
    except ValidationError as e:
        return f"{version}'s {layout.DECISION} is unreadable ({e.errors()[0]['msg']})"
    now = current.version if current else "base"
    if decision.candidate != version:
        return f"{version}'s {layout.DECISION} is about {decision.candidate}, not {version}"
    if not decision.promote:
        return f"the gate rejected {version} against {decision.champion}: {decision.summary()}"
    if decision.champion != now:
        return (
            f"{version} was gated against {decision.champion}, but the champion is now {now}: the decision says "
            f"nothing about {now} (retrain from {now}, or evaluate {version} against it)"
        )
    return None
