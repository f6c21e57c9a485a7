"""Guard suites: held-out evaluation sets a model must not get worse on — what protects a pretrained base's abilities.

A pretrained base arrives with none of its abilities registered as tasks, so the regression suite alone can only
protect what skillgraft itself taught. A *guard* is a set the model is scored on in every regression suite, champion
against candidate (and against the base), and that the gate protects with its own tolerance. It is never trained on
and never replayed, and no training row of any task may repeat one of its prompts (the intake refuses it both ways).

Kinds, one entry each in ``models/<model>/guards.json`` (the model's list, changed by conditional writes):

* ``data``: the user's own prompt/answer files, landed through the same intake as task data (GX-validated,
  quarantined when bad, content-hashed): a task spec with ``role: guard``, every row held out for evaluation.
* ``lm-eval``: a task of lm-evaluation-harness, by name or from a local task YAML, scored on the in-memory model
  through lm-eval's own Hugging Face wrapper and metrics (:mod:`skillgraft.lm_eval_guard`; the ``lm-eval`` extra).
* ``prompts``: prompts without answers, for the drift probes only (KL and number-token mass on them, champion
  against candidate); stored content-addressed under ``models/<model>/guards/<name>/``. Nothing is scored.

Guard prompts (of ``data`` guards) also feed the drift probes, so number-token mass and KL are measured from the first
run on a pretrained base. Base scores are computed once per guard and base and kept under ``models/<model>/guards/``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field

from skillgraft import layout
from skillgraft.names import check_name
from skillgraft.refs import utcnow
from skillgraft.store import KeyNotFound, ObjectStore

GUARD_TOLERANCE = 0.02
"""Default largest drop a guard may show against the champion or the base: 2 points of its metric."""


class GuardError(ValueError):
    """A guard that cannot be added, found or removed; the message says why and what to do."""


class LmEvalSource(BaseModel):
    task: str
    include_path: str | None = Field(
        None, description="a local task YAML (file or folder) instead of a registered task"
    )
    limit: int | None = Field(None, ge=1, description="score the first N documents only")
    metric: str = Field(description="the primary metric lm-eval reports for the task (e.g. acc)")
    config_sha256: str = Field(description="hash of the task's config when it was added: a changed task is refused")


class GuardEntry(BaseModel):
    name: str
    kind: Literal["data", "lm-eval", "prompts"]
    tolerance: float | None = Field(None, ge=0, le=1, description="own tolerance; None: gate.guard_max_drop")
    lm_eval: LmEvalSource | None = None
    prompts_sha256: str | None = Field(None, description="a prompts guard: sha256 of its stored prompts.jsonl")
    prompts: int | None = Field(None, description="a prompts guard: how many prompts")
    added_at: str = Field(default_factory=utcnow)
    added_by: str = ""


class GuardList(BaseModel):
    guards: list[GuardEntry] = Field(default_factory=list)

    def get(self, name: str) -> GuardEntry | None:
        return next((g for g in self.guards if g.name == name), None)


def _key(model: str) -> str:
    return layout.guards_key(model)


def read_guards(store: ObjectStore, model: str) -> GuardList:
    try:
        return GuardList.model_validate_json(store.get(_key(model)))
    except KeyNotFound:
        return GuardList()


def _update(store: ObjectStore, model: str, change) -> GuardList:
    """Apply ``change`` (GuardList -> GuardList) with a conditional write, retrying when another writer won."""
    for _ in range(20):
        try:
            raw, etag = store.get_with_etag(_key(model))
            current: GuardList = GuardList.model_validate_json(raw)
        except KeyNotFound:
            current, etag = GuardList(), None
        new = change(current)
        if store.replace_if(_key(model), new.model_dump_json(indent=2).encode(), etag):
            return new
    raise GuardError(f"{_key(model)} kept changing under concurrent writers; try again")


def add_guard(store: ObjectStore, model: str, entry: GuardEntry) -> GuardList:
    check_name("guard", entry.name)

    def change(current: GuardList) -> GuardList:
        existing = current.get(entry.name)
        if existing is not None:
            same = existing.model_dump(exclude={"added_at", "added_by"}) == entry.model_dump(
                exclude={"added_at", "added_by"}
            )
            if same:
                return current
            raise GuardError(f"model {model!r} already has a guard {entry.name!r} ({existing.kind}); remove it first "
                             f"(`skillgraft guard remove {entry.name}`) or use another name")  # fmt: skip
        return GuardList(guards=[*current.guards, entry])

    return _update(store, model, change)


def remove_guard(store: ObjectStore, model: str, name: str) -> GuardList:
    def change(current: GuardList) -> GuardList:
        if current.get(name) is None:
            known = ", ".join(g.name for g in current.guards) or "none"
            raise GuardError(f"model {model!r} has no guard {name!r} (guards: {known})")
        return GuardList(guards=[g for g in current.guards if g.name != name])

    return _update(store, model, change)


# --- base scores, computed once per guard content and base -----------------------------------------------------------


class BaseScore(BaseModel):
    guard: str
    base_sha256: str
    content_sha256: str
    metric: str
    score: float
    n: int


MAX_PROBE_PROMPTS = 10_000
MAX_PROBE_PROMPT_CHARS = 2_000


def read_probe_prompts(path, name: str) -> list[str]:
    """Prompts of a ``prompts`` guard from a local JSONL file (objects with a ``prompt`` string; any other field is
    ignored) or a text file (one prompt a line). Bounded and checked: what, where, and nothing stored on failure."""
    import re
    from pathlib import Path

    path = Path(path)
    if path.is_symlink() or not path.is_file():
        raise GuardError(f"{path}: not a regular file; nothing was added")
    if path.stat().st_size > 64 * 2**20:
        raise GuardError(
            f"{path}: {path.stat().st_size:,} bytes, over the 64 MiB a prompts guard may be; nothing was added"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GuardError(f"{path}: not UTF-8 text; nothing was added") from None
    control = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
    prompts: list[str] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                row = json.loads(line)
            except ValueError as e:
                raise GuardError(f"{path}:{i}: not valid JSON ({e}); nothing was added") from None
            prompt = row.get("prompt") if isinstance(row, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise GuardError(f"{path}:{i}: no 'prompt' string; nothing was added")
        else:
            prompt = line
        if len(prompt) > MAX_PROBE_PROMPT_CHARS:
            raise GuardError(
                f"{path}:{i}: prompt of {len(prompt)} characters, over {MAX_PROBE_PROMPT_CHARS}; nothing was added"
            )
        if m := control.search(prompt):
            raise GuardError(f"{path}:{i}: control character U+{ord(m.group()):04X} in the prompt; nothing was added")
        prompts.append(prompt)
        if len(prompts) > MAX_PROBE_PROMPTS:
            raise GuardError(f"{path}: more than {MAX_PROBE_PROMPTS:,} prompts; nothing was added")
    if not prompts:
        raise GuardError(f"{path}: no prompts; nothing was added")
    return prompts


def store_probe_prompts(store: ObjectStore, model: str, name: str, prompts: list[str]) -> tuple[str, int]:
    data = "".join(json.dumps({"prompt": p}) + "\n" for p in prompts).encode()
    digest = hashlib.sha256(data).hexdigest()
    key = layout.guard_prompts_key(model, name, digest)
    if not store.exists(key):
        store.put_new(key, data)
    return digest, len(prompts)


def load_probe_prompts(store: ObjectStore, model: str, guard: GuardEntry) -> list[str]:
    """The prompts of a ``prompts`` guard, checked against the hash recorded when it was added."""
    key = layout.guard_prompts_key(model, guard.name, guard.prompts_sha256)
    data = store.get(key)
    if hashlib.sha256(data).hexdigest() != guard.prompts_sha256:
        raise GuardError(f"{key}: does not match the sha256 recorded when guard {guard.name!r} was added (changed or "
                         f"damaged in the store); remove the guard and add it again")  # fmt: skip
    return [json.loads(line)["prompt"] for line in data.decode().splitlines()]


def content_sha256(store: ObjectStore, guard: GuardEntry) -> str:
    """What the guard scores: its accepted batches (data) or its lm-eval source (task, limit, config hash)."""
    if guard.kind == "lm-eval":
        assert guard.lm_eval is not None
        return hashlib.sha256(guard.lm_eval.model_dump_json().encode()).hexdigest()
    from skillgraft.data import Intake

    ids = sorted(b.batch_id for b in Intake(store).batches(guard.name))
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def read_base_score(store: ObjectStore, model: str, guard: GuardEntry, base_sha256: str) -> BaseScore | None:
    content = content_sha256(store, guard)
    key = layout.guard_base_score_key(model, guard.name, content)
    try:
        found = BaseScore.model_validate_json(store.get(key))
    except KeyNotFound:
        return None
    return found if found.base_sha256 == base_sha256 and found.content_sha256 == content else None


def write_base_score(store: ObjectStore, model: str, score: BaseScore) -> None:
    key = layout.guard_base_score_key(model, score.guard, score.content_sha256)
    if not store.exists(key):
        try:
            store.put_new(key, score.model_dump_json(indent=2).encode())
        except Exception:  # noqa: BLE001 - written concurrently by another run: the same scores
            pass
