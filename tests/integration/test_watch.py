"""The landing-zone sensor: each file dropped into the store (not submitted) is announced once, and remembered."""

from __future__ import annotations

import pytest

from skillgraft.store import LocalStore
from tasks.arrivals import NoPrefectServer, announce, marker_key, task_of
from tasks.events import DATA_ARRIVED

from .conftest import Service, events_of


def test_task_of_a_landing_zone_key():
    assert task_of("incoming/count/a.jsonl") == "count"
    assert task_of("incoming/a.jsonl") is None  # not in a task folder
    assert task_of("incoming/Bad Name/a.jsonl") is None  # not a valid task name: the retrain quarantines it


def test_announce_without_a_prefect_server_says_so_and_remembers_nothing(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    store = LocalStore(tmp_path / "store")
    store.put_new("incoming/count/a.jsonl", b'{"prompt": "count : a b", "answer": 2}\n')
    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(NoPrefectServer, match="PREFECT_API_URL"):
        announce(store, "count", "incoming/count/a.jsonl", "demo")
    assert list(store.keys("announced/")) == []
    with pytest.raises(ValueError, match="task 'sum'"):
        announce(store, "sum", "incoming/count/a.jsonl", "demo")


@pytest.mark.slow
def test_watch_announces_each_dropped_file_once_and_a_relanded_file_again(service: Service, tmp_path):
    from flows.watch import watch

    model = "sensor"  # no deployment listens for this model: the announcements start nothing here
    store = LocalStore(tmp_path / "store")
    first = b'{"prompt": "count : a b", "answer": 2}\n'
    store.put_new("incoming/count/dropped.jsonl", first)
    store.put_new("incoming/stray.csv", b"prompt,answer\n")
    store.put_new("incoming/count/imgs/0001.png", b"\x89PNG...")  # an image waits for its data file: not announced

    found = watch(model=model, store=store.url)
    assert sorted((a.key, a.task, a.source) for a in found) == [
        ("incoming/count/dropped.jsonl", "count", "watch"), ("incoming/stray.csv", None, "watch")]  # fmt: skip
    assert watch(model=model, store=store.url) == []  # remembered: not announced again
    assert store.exists(marker_key(model, "incoming/count/dropped.jsonl", found[0].sha16))

    # the file is ingested (leaves the landing zone), then a new file lands under the same name: a new arrival
    store.delete("incoming/count/dropped.jsonl")
    store.put_new("incoming/count/dropped.jsonl", first + b'{"prompt": "count : a b c", "answer": 3}\n')
    [again] = watch(model=model, store=store.url)
    assert again.key == "incoming/count/dropped.jsonl" and again.sha16 != found[0].sha16

    events = events_of(DATA_ARRIVED, model, at_least=3)
    assert sorted((e.payload["key"], e.payload["sha16"]) for e in events) == sorted(
        (a.key, a.sha16) for a in [*found, again])  # fmt: skip
