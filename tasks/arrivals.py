"""Announcing new data: ``skillgraft.data.arrived``, once per landed file, remembered in the store.

Two ways a file reaches the landing zone (``incoming/<task>/<file>``): ``skillgraft submit`` (which announces it at
once through :func:`announce`), or any other tool writing into the store directly — then the ``watch`` flow finds
it on its next scan and announces it the same way. The retrain deployment's trigger listens for the event.

What was announced is remembered as one small marker object per file and model,
``announced/<model>/<task>/<file>@<sha16>.json`` (:func:`skillgraft.layout.announced_key`), holding the Arrival; sha16
is the file's batch id (:func:`skillgraft.layout.batch_id`). Which landed files are announced is exactly which the
intake ingests (:func:`skillgraft.layout.is_waiting_data_file`). The marker names the file's content, so the same name
landing again with other bytes (after the first file was ingested) is announced again. Delivery is at-least-once: the
event is posted to the Prefect API (which answers only once it has the event) *before* the marker is written, so a
crash in between announces the file twice — and a second retrain of the same data finds nothing new. Nothing here deletes or moves landed files.
"""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import Event
from pydantic import BaseModel, Field

from skillgraft import layout
from skillgraft.config import SkillgraftConfig
from skillgraft.store import KeyExists, KeyNotFound, ObjectStore
from tasks.events import DATA_ARRIVED, model_resource
from tasks.storage import store_for


class NoPrefectServer(RuntimeError):
    """The event could not be posted (no Prefect API configured, or it refused); the landed file is untouched."""


class Arrival(BaseModel):
    """One landed file, as announced: the payload of ``skillgraft.data.arrived``."""

    model: str
    task: str | None = Field(description="the task folder; None when the file is not in a valid task folder")
    key: str = Field(description="the landing-zone key, incoming/<task>/<file>")
    sha16: str = Field(description="first 16 hex digits of the sha256 of the file's bytes (= its batch id)")
    size: int
    store: str
    source: Literal["submit", "watch"]


task_of = layout.landing_task
"""The task a landing-zone key belongs to, or None (no task folder, or not a valid task name)."""
marker_key = layout.announced_key
"""The marker remembering that a landed file (its key and bytes) was announced for a model."""


def _arrival(store: ObjectStore, model: str, key: str, source: Literal["submit", "watch"]) -> Arrival:
    data = store.get(key)
    return Arrival(model=model, task=task_of(key), key=key, sha16=layout.batch_id(data),
                   size=len(data), store=store.url, source=source)  # fmt: skip


def announced(store: ObjectStore, arrival: Arrival) -> bool:
    return store.exists(marker_key(arrival.model, arrival.key, arrival.sha16))


def post_event(name: str, resource: dict[str, str], payload: dict) -> Event:
    """Post one event to the Prefect API and return once the server has it (unlike ``emit_event``, which queues it
    and drops it silently when the server can't be reached). Raises :class:`NoPrefectServer`."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        raise NoPrefectServer(
            "no Prefect server configured (PREFECT_API_URL is unset): start one with `skillgraft server` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    event = Event(event=name, resource=resource, payload=payload)
    try:
        with get_client(sync_client=True) as client:
            response = client.request("POST", "/events", json=[event.model_dump(mode="json")])
            response.raise_for_status()
    except httpx.HTTPError as e:
        raise NoPrefectServer(f"could not post {name} to the Prefect API at {api}: {e}") from None
    return event


def announce(
    store: ObjectStore, task: str | None, key: str, model: str, *, source: Literal["submit", "watch"] = "submit"
) -> Arrival:
    """Emit ``skillgraft.data.arrived`` for the landed file ``key`` (for ``model``), then remember it.

    ``task`` must match the key's task folder (it is checked, so a caller can't announce one task under another).
    Raises :class:`NoPrefectServer` when the event can't be posted (then nothing is remembered, so the watcher
    will announce the file later), and ``KeyNotFound`` when the file has left the landing zone already.
    """
    arrival = _arrival(store, model, key, source)
    if task is not None and arrival.task != task:
        raise ValueError(f"{key!r} is not in the landing-zone folder of task {task!r} ({layout.landing_prefix(task)})")
    post_event(DATA_ARRIVED, model_resource(model), arrival.model_dump(mode="json"))
    try:
        store.put_new(marker_key(model, key, arrival.sha16), arrival.model_dump_json(indent=2).encode())
    except KeyExists:  # announced twice (submit and the watcher raced): at-least-once, as documented
        pass
    return arrival


def unannounced(store: ObjectStore, model: str) -> list[Arrival]:
    """Data files waiting in the landing zone that were never announced for ``model`` (in key order): the files the
    intake would ingest (:func:`skillgraft.layout.is_waiting_data_file`). Images in a task's landing folder are not
    announced: they wait for the data file that references them."""
    out = []
    for key in store.keys(layout.INCOMING_PREFIX):
        if not layout.is_waiting_data_file(key):
            continue
        try:
            arrival = _arrival(store, model, key, "watch")
        except KeyNotFound:  # ingested since the listing
            continue
        if not announced(store, arrival):
            out.append(arrival)
    return out


# --- the watch flow's tasks (the functions above stay plain: `skillgraft submit` announces outside a flow) --------


@task(name="scan-landing-zone", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def scan(cfg: SkillgraftConfig) -> list[Arrival]:
    return unannounced(store_for(cfg), cfg.model)


@task(name="announce", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30])
def announce_arrival(cfg: SkillgraftConfig, arrival: Arrival) -> Arrival | None:
    """Announce one found file; None when it left the landing zone meanwhile (a retrain took it: nothing to say)."""
    try:
        return announce(store_for(cfg), arrival.task, arrival.key, cfg.model, source="watch")
    except KeyNotFound:
        return None
