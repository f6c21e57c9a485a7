"""Deployments, triggers and review through the Prefect API: what `skillgraft server` registers, and what a run leaves."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from skillgraft.registry import Registry
from skillgraft.store import LocalStore
from tasks.events import DATA_ARRIVED, MODEL_PROMOTED

from .conftest import (
    CRON,
    MODEL,
    WATCH_EVERY,
    Service,
    Triggered,
    artifacts_of,
    assert_one_retrain_per_arrival,
    events_of,
)

pytestmark = pytest.mark.slow


def test_retrain_deployment_has_the_cron_schedule_the_data_trigger_and_one_run_per_model(service: Service):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"retrain/{MODEL}")
        automations = client.read_automations_by_name(f"retrain {MODEL} when data arrives")
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules] == [(CRON, "UTC", True)]
    assert dep.entrypoint == "flows.retrain.retrain"
    assert_one_retrain_per_arrival(dep, automations, service.store, service.config)


def test_watch_deployment_scans_on_an_interval_and_never_queues_scans(service: Service):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"watch/{MODEL}")
    assert [s.schedule.interval for s in dep.schedules] == [timedelta(seconds=WATCH_EVERY)]
    assert dep.global_concurrency_limit.limit == 1
    assert dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert dep.parameters["store"] == str(service.store)


def test_announced_data_triggers_a_retrain_that_promotes_and_a_second_arrival_waits_its_turn(
    service: Service, triggered: Triggered
):
    from prefect.client.orchestration import get_client

    first, second = triggered.runs
    assert first.state.is_completed(), first.state
    assert second.state.is_completed(), second.state
    # either event's run may take the slot first; payload task null arrives as None (not the string "None")
    assert sorted((r.parameters["model"], str(r.parameters["task"])) for r in (first, second)) == [
        (MODEL, "None"), (MODEL, "count")]  # fmt: skip
    assert first.name == f"{MODEL}-count-promoted"  # it found the count file (task count, or every task)
    assert second.name == f"{MODEL}-{second.parameters['task'] or 'incoming'}-no-new-data"  # nothing left for it
    # enqueued behind the first run (deployment concurrency limit 1, ENQUEUE): not run beside it, not dropped
    assert second.start_time >= first.end_time
    with get_client(sync_client=True) as client:
        waited = [s.name for s in client.read_flow_run_states(second.id)]
    assert "AwaitingConcurrencySlot" in waited, waited
    reg = Registry(LocalStore(service.store), MODEL)
    assert reg.champion().version == "v2" and reg.champion().previous == "v1"
    assert "count" in reg.manifest("v2").tasks
    moves = [h.action for h in reg.history()]
    assert [a for a in moves if not a.startswith("post-check")] == ["promote", "promote"]
    assert moves[-1] == "post-check-passed"  # the triggered run checked its promotion and said so


def test_the_promoting_run_leaves_every_review_artifact_readable_through_the_api(
    service: Service, triggered: Triggered
):
    arts = artifacts_of(triggered.runs[0].id)
    m = MODEL
    assert {f"{m}-data-validation", f"{m}-training", f"{m}-regression", f"{m}-decision", f"{m}-model-card",
            f"{m}-model-card-link", f"{m}-post-check"} <= set(arts)  # fmt: skip
    assert not {f"{m}-data-rejected", f"{m}-rollback"} & set(arts)

    validation = json.loads(arts[f"{m}-data-validation"].data)
    assert {"file": "count-1.jsonl", "rule": "(outcome)", "success": True}.items() <= validation[0].items()

    training = arts[f"{m}-training"].data
    assert "`sa_proj`" in training and "trainable parameters" in training and "| device | cpu |" in training
    png = re.search(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", training)
    assert png and base64.b64decode(png.group(1)).startswith(b"\x89PNG\r\n\x1a\n")

    table = {row["task"]: row for row in json.loads(arts[f"{m}-regression"].data)}
    assert set(table) == {"first", "last", "max", "count"}
    assert table["count"]["kind"] == "new" and all(row["pass"] is True for row in table.values())

    decision = arts[f"{m}-decision"].data
    assert decision.startswith("# Decision: promote") and "**PROMOTE** candidate `v2` against champion `v1`" in decision
    assert f"{service.store}/models/{m}/versions/v2/" in decision

    card_in_store = (service.store / "models" / m / "versions" / "v2" / "card.md").read_text()
    assert arts[f"{m}-model-card"].data == card_in_store
    link = re.fullmatch(r"\[model card of demo v2\]\((file://[^)]+)\)", arts[f"{m}-model-card-link"].data)
    assert link and Path(unquote(urlparse(link.group(1)).path)).read_text() == card_in_store

    assert "passed" in arts[f"{m}-post-check"].data


def test_the_events_of_a_run_are_in_the_prefect_event_feed(service: Service, triggered: Triggered):
    arrived = events_of(DATA_ARRIVED, MODEL, at_least=2)
    promoted = events_of(MODEL_PROMOTED, MODEL, at_least=1)
    assert [(e.payload["task"], e.payload["key"], e.payload["source"]) for e in arrived] == [
        ("count", triggered.key, "submit"), (None, "incoming/stray.csv", "watch")]  # fmt: skip
    assert [(e.payload["version"], e.payload["previous"]) for e in promoted] == [("v2", "v1")]
