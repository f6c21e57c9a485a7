"""A file larger than one chunk is validated chunk by chunk and ends up exactly where a one-chunk run puts it.

Chunks are made small here (``CHUNK_ROWS`` = 7) so that files of a few dozen rows span several; the same files are
ingested into a second store with one chunk, and the two stores are compared byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skillgraft import layout
from skillgraft.data import Intake, TaskSpec
from skillgraft.data import io as data_io
from skillgraft.data.keyindex import KeyIndex, key_values
from skillgraft.store import LocalStore

SPEC = TaskSpec(name="add", answer_type="number", min_rows=8)


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"{i} plus {i + 1}?", "answer": str(2 * i + 1)} for i in range(start, start + n)]


def _write(path: Path, rows: list[dict], *, extra: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    return path


def _intake(root: Path, *specs: TaskSpec) -> Intake:
    intake = Intake(LocalStore(root))
    for spec in specs or (SPEC,):
        intake.register_task(spec)
    return intake


def _ingest(intake: Intake, task: str, path: Path, chunk_rows: int, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(data_io, "CHUNK_ROWS", chunk_rows)
        return intake.ingest_key(intake.submit(task, path))


def _batch_files(intake: Intake, task: str, batch_id: str) -> dict[str, bytes]:
    prefix = layout.batch_prefix(task, batch_id)
    names = ("train.jsonl", "eval.jsonl", "keys.train", "keys.eval")
    return {n: intake.store.get(prefix + n) for n in names}


def test_a_file_of_several_chunks_is_stored_exactly_as_one_chunk_stores_it(tmp_path, monkeypatch):
    path = _write(tmp_path / "add.jsonl", _rows(60))
    chunked, whole = _intake(tmp_path / "a"), _intake(tmp_path / "b")
    a = _ingest(chunked, "add", path, 7, monkeypatch)
    b = _ingest(whole, "add", path, 10_000, monkeypatch)
    assert a.status == b.status == "accepted", (a.message, b.message)
    assert a.batch == b.batch and a.batch.train_rows + a.batch.eval_rows == 60
    assert _batch_files(chunked, "add", a.batch_id) == _batch_files(whole, "add", b.batch_id)
    assert len(a.report.chunks) == 9 and [c.rows for c in a.report.chunks] == [7] * 8 + [4]
    assert a.report.chunks[1].first_line == 8 and a.report.chunks[-1].last_line == 60
    assert not b.report.chunks  # one GX run: no chunk records
    assert {r.rule for r in a.report.results} == {r.rule for r in b.report.results}
    keys = np.frombuffer(_batch_files(chunked, "add", a.batch_id)["keys.eval"], dtype="<u8")
    assert len(keys) == a.batch.eval_rows and np.all(np.diff(keys.astype(np.uint64)) > 0)  # sorted, distinct
    assert "validated in 9 chunks" in a.report.to_html()


def test_problems_spanning_chunks_are_found_and_reported_as_one_chunk_reports_them(tmp_path, monkeypatch):
    rows = _rows(40)
    rows[29] = dict(rows[2])  # a copy of line 3 at line 30: another chunk
    rows[33] = {"prompt": rows[5]["prompt"], "answer": "12345"}  # same prompt as line 6, a different answer
    rows[12]["answer"] = "twelve"  # not a number, in chunk 2
    path = _write(tmp_path / "add.jsonl", rows)
    a = _ingest(_intake(tmp_path / "a"), "add", path, 7, monkeypatch)
    b = _ingest(_intake(tmp_path / "b"), "add", path, 10_000, monkeypatch)
    assert a.status == b.status == "quarantined"
    assert a.report.issue_count == b.report.issue_count == 3
    # the same lines, except that across chunks a different answer is not quoted (only the answers' hashes are kept)
    differ = "add.jsonl:34: same prompt as line 6 but a different answer"
    assert sorted(p for p in a.report.problems if not p.startswith(differ)) == sorted(
        p for p in b.report.problems if not p.startswith(differ)
    )
    assert f"{differ} ('11' vs '12345'): keep one" in b.report.problems
    assert "add.jsonl:30: duplicate of line 3 (same prompt and answer): remove one copy" in a.report.problems
    assert f"{differ}: keep one" in a.report.problems
    assert any(p.startswith("add.jsonl:13: field 'answer' is 'twelve', not a number") for p in a.report.problems)
    failed = {r.rule: r.observed for r in a.report.results if not r.success}
    assert failed == {"number_format": 1, "duplicates": 2}
    assert a.report.gx_chunk == 2  # the Data Docs shown are of the chunk that failed in GX
    assert not list(_intake(tmp_path / "a").store.keys(layout.batches_prefix("add")))


def test_a_parse_error_in_a_late_chunk_quarantines_the_whole_file(tmp_path, monkeypatch):
    path = _write(tmp_path / "add.jsonl", _rows(50), extra='{"prompt": "half a line\n')
    intake = _intake(tmp_path / "a")
    result = _ingest(intake, "add", path, 7, monkeypatch)
    assert result.status == "quarantined"
    assert result.report.failed_rules() == ["parse"] and "add.jsonl:51" in result.report.problems[0]
    assert not list(intake.store.keys(layout.batches_prefix("add")))


def test_min_rows_counts_the_whole_file_not_one_chunk(tmp_path, monkeypatch):
    spec = TaskSpec(name="add", answer_type="number", min_rows=30)
    short = _ingest(_intake(tmp_path / "a", spec), "add", _write(tmp_path / "s.jsonl", _rows(20)), 7, monkeypatch)
    assert short.status == "quarantined" and short.report.failed_rules() == ["min_rows"]
    assert (
        short.report.problems[0] == "s.jsonl: has 20 examples; task 'add' needs at least 30 (min_rows): add "
        "examples or merge files"
    )
    enough = _ingest(_intake(tmp_path / "b", spec), "add", _write(tmp_path / "e.jsonl", _rows(30)), 7, monkeypatch)
    assert enough.status == "accepted", enough.message  # no chunk of 7 holds 30 rows: the count is the file's


def test_leakage_is_checked_on_the_key_index_of_earlier_batches(tmp_path, monkeypatch):
    intake = _intake(tmp_path / "a")
    first = _ingest(intake, "add", _write(tmp_path / "one.jsonl", _rows(40)), 7, monkeypatch)
    assert first.status == "accepted"
    eval_rows = [
        json.loads(line) for line in intake.store.get(layout.split_key("add", first.batch_id, "eval")).splitlines()
    ]
    held = eval_rows[0]
    again = _rows(30, start=1000)
    again[20] = held  # line 21 repeats a prompt batch one holds out
    second = _ingest(intake, "add", _write(tmp_path / "two.jsonl", again), 7, monkeypatch)
    assert second.status == "quarantined" and second.report.failed_rules() == ["leakage"]
    assert any(
        p.startswith(f"two.jsonl:21: prompt is already held out for evaluation in batch {first.batch_id}")
        for p in second.report.problems
    )
    evals, trains = intake.batch_store.seen_keys("add")
    assert isinstance(evals, KeyIndex) and len(evals) == first.batch.eval_rows and len(trains) == first.batch.train_rows


def test_a_batch_stored_without_key_files_is_read_from_its_splits(tmp_path, monkeypatch):
    """Batches written before key files existed: their keys come from hashing the splits, with the same result."""
    intake = _intake(tmp_path / "a")
    first = _ingest(intake, "add", _write(tmp_path / "one.jsonl", _rows(40)), 7, monkeypatch)
    indexed = intake.batch_store.seen_keys("add")
    key = layout.batch_manifest_key("add", first.batch_id)
    manifest = json.loads(intake.store.get(key))
    for name in ("keys.train", "keys.eval"):
        del manifest["files"][name]
        intake.store.delete(layout.batch_prefix("add", first.batch_id) + name)
    intake.store.delete(key)
    intake.store.put_new(key, json.dumps(manifest).encode())
    hashed = intake.batch_store.seen_keys("add")
    assert [dict(i) for i in hashed] == [dict(i) for i in indexed] and len(hashed[0]) == first.batch.eval_rows


def test_a_tampered_key_file_is_refused(tmp_path, monkeypatch):
    from skillgraft.data import BatchCorrupted

    intake = _intake(tmp_path / "a")
    first = _ingest(intake, "add", _write(tmp_path / "one.jsonl", _rows(40)), 7, monkeypatch)
    key = layout.batch_prefix("add", first.batch_id) + "keys.eval"
    intake.store.delete(key)
    intake.store.put_new(key, b"\x00" * 8)
    with pytest.raises(BatchCorrupted, match="keys.eval does not match its checksum"):
        intake.ingest_key(intake.submit("add", _write(tmp_path / "two.jsonl", _rows(20, start=500))))


def test_key_index_keeps_the_earliest_label_and_looks_up_whole_chunks():
    a = key_values(["00000000000000ff", "0000000000000001"])
    b = key_values(["0000000000000001", "ffffffffffffffff"])
    index = KeyIndex([(a, "first"), (b, "second")])
    assert len(index) == 3 and index["0000000000000001"] == "first" and index["ffffffffffffffff"] == "second"
    assert "0000000000000002" not in index and "not hex" not in index
    assert index.found(key_values(["ffffffffffffffff", "0000000000000002"])).tolist() == [True, False]
    assert index.restrict(["00000000000000ff", "0000000000000003"]) == {"00000000000000ff": "first"}
    assert KeyIndex().found(a).tolist() == [False, False]
