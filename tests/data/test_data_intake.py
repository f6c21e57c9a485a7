"""Intake on a LocalStore: bad files land in quarantine with the rule they break, good ones in an immutable batch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from skillgraft.data import (
    BatchCorrupted,
    BatchRejected,
    Example,
    Intake,
    TaskSpec,
    TaskSpecConflict,
    UnknownTask,
    ValidationReport,
    safe_file_name,
)
from skillgraft.names import InvalidName
from skillgraft.store import LocalStore

CORPUS = Path(__file__).parent / "corpus"
SPECS = [
    TaskSpec(name="qa"),
    TaskSpec(name="count", answer_type="number"),
    TaskSpec(name="sentiment", answer_type="label", labels=["positive", "negative", "neutral"]),
]
VALID = CORPUS / "qa_valid.jsonl"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def intake(tmp_path: Path) -> Intake:
    """Three registered tasks; qa already holds one accepted batch (qa_valid.jsonl), so leakage can be checked."""
    intake = Intake(LocalStore(tmp_path / "store"))
    for spec in SPECS:
        intake.register_task(spec)
    result = intake.ingest_key(intake.submit("qa", VALID))
    assert result.status == "accepted", result.message
    return intake


def _huge_line(tmp_path: Path) -> Path:
    path = tmp_path / "qa_huge_line.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"prompt": "fine", "answer": "ok"}\n{"prompt": "')
        chunk = b"x" * (1 << 20)
        f.writelines(chunk for _ in range(50))
        f.write(b'", "answer": "y"}\n')
    return path


def _deeply_nested(tmp_path: Path) -> Path:
    path = tmp_path / "qa_deeply_nested.jsonl"
    path.write_bytes(b'{"prompt": "a", "answer": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n")
    return path


GENERATED = {"qa_huge_line.jsonl": _huge_line, "qa_deeply_nested.jsonl": _deeply_nested}

# file, rule reported, parse error code (rule "parse" only), start of the first problem line
BAD_INPUTS = [
    (
        "qa_invalid_json_line3.jsonl",
        "parse",
        "invalid_json",
        "qa_invalid_json_line3.jsonl:3: invalid JSON at column 43",
    ),
    ("qa_latin1.jsonl", "parse", "encoding", "qa_latin1.jsonl:4: file is not UTF-8 (byte 0xe9"),
    ("qa_utf16.jsonl", "parse", "encoding", "qa_utf16.jsonl: file is UTF-16 text"),
    ("qa_empty.jsonl", "parse", "empty", "qa_empty.jsonl: file is empty"),
    ("qa_binary_junk.jsonl", "parse", "binary", "qa_binary_junk.jsonl:3: file contains NUL bytes"),
    ("qa_parquet_named_jsonl.jsonl", "parse", "binary", "qa_parquet_named_jsonl.jsonl: file is Parquet data"),
    ("qa_huge_line.jsonl", "parse", "line_too_long", "qa_huge_line.jsonl:2: line is 52,428,829 bytes"),
    ("qa_deeply_nested.jsonl", "parse", "invalid_json", "qa_deeply_nested.jsonl:1: invalid JSON: nested too deeply"),
    ("qa_duplicate_key.jsonl", "parse", "invalid_json", "qa_duplicate_key.jsonl:6: field 'prompt' appears twice"),
    ("qa_unknown_field.jsonl", "parse", "unknown_field", "qa_unknown_field.jsonl:1: unknown field 'difficulty'"),
    ("qa_not_objects.jsonl", "parse", "wrong_type", "qa_not_objects.jsonl:1: line is a list"),
    ("qa_answer_is_list.jsonl", "parse", "wrong_type", "qa_answer_is_list.jsonl:2: field 'answer' is a list"),
    (
        "qa_answer_is_number.jsonl",
        "parse",
        "wrong_type",
        "qa_answer_is_number.jsonl:5: field 'answer' is the number 42",
    ),
    ("qa_nan_answer.jsonl", "parse", "wrong_type", "qa_nan_answer.jsonl:2: field 'answer' is NaN"),
    ("qa_missing_answer.jsonl", "parse", "missing_field", "qa_missing_answer.jsonl:7: field 'answer' is missing"),
    ("qa_null_answer.jsonl", "parse", "missing_field", "qa_null_answer.jsonl:3: field 'answer' is null"),
    ("qa_notes.txt", "parse", "unsupported_format", "qa_notes.txt: unsupported file type '.txt'"),
    ("qa_missing_column.csv", "parse", "missing_field", "qa_missing_column.csv:1: column 'answer' is missing"),
    ("qa_ragged.csv", "parse", "invalid_csv", "qa_ragged.csv:5: row has 3 fields but the header has 2"),
    ("qa_wrong_types.parquet", "parse", "wrong_type", "qa_wrong_types.parquet: column 'answer' has type int64"),
    ("qa_truncated.parquet", "parse", "invalid_parquet", "qa_truncated.parquet: not a Parquet file"),
    ("qa_empty_answer.jsonl", "not_empty", None, "qa_empty_answer.jsonl:5: field 'answer' is empty"),
    (
        "qa_whitespace_prompt.csv",
        "not_empty",
        None,
        "qa_whitespace_prompt.csv:8: field 'prompt' is empty (only whitespace)",
    ),
    ("qa_prompt_too_long.jsonl", "max_length", None, "qa_prompt_too_long.jsonl:8: field 'prompt' is 2814 characters"),
    ("qa_answer_too_long.jsonl", "max_length", None, "qa_answer_too_long.jsonl:1: field 'answer' is 201 characters"),
    ("qa_too_few_rows.jsonl", "min_rows", None, "qa_too_few_rows.jsonl: has 3 examples; task 'qa' needs at least 8"),
    ("qa_duplicate_rows.jsonl", "duplicates", None, "qa_duplicate_rows.jsonl:10: duplicate of line 3"),
    ("qa_leakage.jsonl", "leakage", None, "qa_leakage.jsonl:6: prompt is already held out for evaluation in batch"),
    (
        "count_not_a_number.jsonl",
        "number_format",
        None,
        "count_not_a_number.jsonl:6: field 'answer' is 'about 5', not a number",
    ),
    (
        "sentiment_label_outside_set.jsonl",
        "label_set",
        None,
        "sentiment_label_outside_set.jsonl:4: field 'answer' is 'Positive!'",
    ),
]


def test_every_corpus_file_has_an_expected_rule():
    committed = {p.name for p in CORPUS.iterdir() if p.is_file() and p.name not in ("make_corpus.py", VALID.name)}
    listed = {name for name, *_ in BAD_INPUTS} - set(GENERATED)
    assert committed == listed
    assert len(committed) >= 15


@pytest.mark.parametrize(("name", "rule", "code", "first_problem"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_quarantined_with_the_rule_it_breaks(intake, tmp_path, name, rule, code, first_problem):
    task = name.split("_")[0]
    path = GENERATED[name](tmp_path) if name in GENERATED else CORPUS / name
    data = path.read_bytes()
    batches_before = intake.batches(task)

    result = intake.ingest_key(intake.submit(task, path))

    batch_id = _sha(data)[:16]
    location = f"quarantine/{task}/{batch_id}/"
    assert (result.status, result.batch_id, result.location) == ("quarantined", batch_id, location)
    report = result.report
    assert report is not None and report.success is False
    assert report.failed_rules() == [rule]
    if rule == "parse":
        assert {r.observed for r in report.results} == {code}
        assert report.gx_results == {}  # no GX run on a file that could not be read
    else:
        assert report.gx_results["success"] is False
    assert report.problems[0].startswith(first_problem), report.problems[0]
    assert result.message.startswith(first_problem)
    assert result.message.endswith(f"batch {batch_id} moved to {location}, nothing deleted")
    # the original bytes survive unchanged; the report is stored beside them; nothing stays in the landing zone
    store = intake.store
    assert store.get(location + name) == data
    stored = ValidationReport.model_validate_json(store.get(location + "report.json"))
    assert stored.failed_rules() == [rule] and stored.problems == report.problems
    assert b"skillgraft validation" in store.get(location + "report.html")
    assert intake.incoming() == []
    assert intake.batches(task) == batches_before


def test_valid_file_lands_in_its_batch_folder_with_the_hash_split(tmp_path):
    intake = Intake(LocalStore(tmp_path))
    intake.register_task(TaskSpec(name="spell", eval_fraction=0.25))
    data = VALID.read_bytes()

    result = intake.ingest_key(intake.submit("spell", VALID))

    batch_id = _sha(data)[:16]
    folder = f"tasks/spell/batches/{batch_id}/"
    assert (result.status, result.location) == ("accepted", folder)
    assert result.batch.model_dump() == {"task": "spell", "batch_id": batch_id, "train_rows": 9, "eval_rows": 3}
    assert sorted(intake.store.keys(folder)) == [
        folder + n
        for n in (
            "batch.json",
            "eval.jsonl",
            "keys.eval",
            "keys.train",
            "report.json",
            "source/qa_valid.jsonl",
            "train.jsonl",
        )
    ]
    assert intake.store.get(folder + "source/qa_valid.jsonl") == data
    # eval iff int(sha256(prompt)[:8], 16) / 2**32 < 0.25, in file order
    rows = [json.loads(line) for line in data.splitlines()]
    held_out = [r["prompt"] for r in rows if int(_sha(r["prompt"].encode())[:8], 16) / 2**32 < 0.25]
    assert [ex.prompt for ex in intake.load_split(result.batch, "eval")] == held_out
    assert held_out == [f"[valid] Spell the word '{w}' backwards." for w in ("stone", "piano", "candle")]
    train = intake.load_split(result.batch, "train")
    assert [ex.model_dump(exclude_none=True) for ex in train] == [r for r in rows if r["prompt"] not in held_out]
    manifest = json.loads(intake.store.get(folder + "batch.json"))
    assert manifest["files"]["train.jsonl"]["sha256"] == _sha(intake.store.get(folder + "train.jsonl"))
    assert manifest["source_sha256"] == _sha(data)
    assert intake.incoming() == []


def test_tiny_batch_holds_out_its_lowest_hash_prompt(tmp_path):
    intake = Intake(LocalStore(tmp_path))
    intake.register_task(TaskSpec(name="tiny", min_rows=2, eval_fraction=0.01))
    examples = [Example(prompt=f"[tiny] question {i}", answer=str(i)) for i in range(4)]

    batch = intake.accept_examples("tiny", examples, "tiny.jsonl")

    lowest = min(examples, key=lambda ex: _sha(ex.prompt.encode()))
    assert (batch.train_rows, batch.eval_rows) == (3, 1)
    assert intake.load_split(batch, "eval") == [lowest]


def test_same_file_submitted_twice_gives_one_batch(intake):
    first = intake.batches("qa")
    result = intake.ingest_key(intake.submit("qa", VALID))

    batch_id = _sha(VALID.read_bytes())[:16]
    assert (result.status, result.location) == ("duplicate", f"tasks/qa/batches/{batch_id}/")
    assert result.batch == first[0]
    assert "already accepted" in result.message
    assert intake.batches("qa") == first and len(first) == 1
    assert intake.incoming() == []
    assert list(intake.store.keys("quarantine/")) == []


def test_same_bytes_under_another_name_are_a_duplicate(intake, tmp_path):
    copy = tmp_path / "Copy of QA (final).JSONL"
    copy.write_bytes(VALID.read_bytes())
    key = intake.submit("qa", copy)
    assert key == "incoming/qa/copy_of_qa_final.jsonl"
    assert intake.ingest("qa")[0].status == "duplicate"
    assert len(intake.batches("qa")) == 1


def test_submit_keeps_both_files_when_names_clash(intake, tmp_path):
    a, b = tmp_path / "a" / "data.jsonl", tmp_path / "b" / "data.jsonl"
    a.parent.mkdir(), b.parent.mkdir()
    a.write_bytes(b'{"prompt": "one", "answer": "1"}\n')
    b.write_bytes(b'{"prompt": "two", "answer": "2"}\n')

    keys = [intake.submit("qa", a), intake.submit("qa", a), intake.submit("qa", b)]

    suffix = _sha(b.read_bytes())[:16]
    assert keys == ["incoming/qa/data.jsonl", "incoming/qa/data.jsonl", f"incoming/qa/data-{suffix}.jsonl"]
    assert intake.incoming("qa") == sorted(set(keys))
    assert intake.store.get(keys[2]) == b.read_bytes()


def test_traversal_and_unsafe_task_names_are_refused(intake, tmp_path):
    with pytest.raises(InvalidName, match="invalid task name '../etc'"):
        intake.submit("../etc", VALID)
    with pytest.raises(ValidationError, match="invalid task name"):
        TaskSpec(name="../../secrets")
    with pytest.raises(InvalidName):
        intake.task_spec("/abs")
    assert list(intake.store.keys("incoming/")) == []

    # files dropped straight into the store under an unsafe folder are kept under quarantine/_invalid/
    data = VALID.read_bytes()
    intake.store.put_new("incoming/Bad Task!/Data.jsonl", data)
    intake.store.put_new("incoming/loose.jsonl", data)
    results = intake.ingest()

    batch_id = _sha(data)[:16]
    assert [(r.status, r.location) for r in results] == [("quarantined", f"quarantine/_invalid/{batch_id}/")] * 2
    assert [r.report.failed_rules() for r in results] == [["task_name"], ["task_name"]]
    assert "invalid task name 'Bad Task!'" in results[0].message
    assert intake.store.get(f"quarantine/_invalid/{batch_id}/data.jsonl") == data
    assert intake.store.get(f"quarantine/_invalid/{batch_id}/loose.jsonl") == data
    assert intake.incoming() == []


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\My Data (v2).JSONL", "my_data_v2.jsonl"),
        ("..hidden..csv", "hidden.csv"),
        (".jsonl", "jsonl"),
        ("x" * 100 + ".parquet", "x" * 56 + ".parquet"),
        ("données.jsonl", "donn_es.jsonl"),
    ],
)
def test_file_names_are_sanitized(given, safe):
    assert safe_file_name(given) == safe


def test_unknown_task_is_quarantined_then_accepted_once_registered(intake):
    data = VALID.read_bytes().replace(b"[valid]", b"[later]")
    intake.store.put_new("incoming/later/data.jsonl", data)
    batch_id = _sha(data)[:16]

    first = intake.ingest_key("incoming/later/data.jsonl")
    assert (first.status, first.report.failed_rules()) == ("quarantined", ["unknown_task"])
    assert "task 'later' is not registered" in first.message
    assert intake.store.get(f"quarantine/later/{batch_id}/data.jsonl") == data

    intake.register_task(TaskSpec(name="later"))
    intake.store.put_new("incoming/later/data.jsonl", data)
    second = intake.ingest_key("incoming/later/data.jsonl")
    assert (second.status, second.location) == ("accepted", f"tasks/later/batches/{batch_id}/")
    assert intake.store.exists(f"quarantine/later/{batch_id}/report.json")  # the earlier rejection stays on record


def test_a_rejected_file_rejected_again_keeps_one_report(intake):
    bad = CORPUS / "qa_empty_answer.jsonl"
    first = intake.ingest_key(intake.submit("qa", bad))
    second = intake.ingest_key(intake.submit("qa", bad))
    assert first.location == second.location
    assert sorted(k.rsplit("/", 1)[1] for k in intake.store.keys(first.location)) == [
        "qa_empty_answer.jsonl",
        "report.html",
        "report.json",
    ]


def test_register_task_is_write_once(intake):
    assert intake.register_task(TaskSpec(name="qa")) == TaskSpec(name="qa")
    with pytest.raises(TaskSpecConflict, match=r"eval_fraction: 0.2 -> 0.5.*register a new task name"):
        intake.register_task(TaskSpec(name="qa", eval_fraction=0.5))
    assert intake.tasks() == ["count", "qa", "sentiment"]
    with pytest.raises(
        UnknownTask, match=r"task 'nope' is not registered.*known tasks: \['count', 'qa', 'sentiment'\]"
    ):
        intake.task_spec("nope")
    with pytest.raises(UnknownTask):
        intake.submit("nope", VALID)


def test_load_split_refuses_a_modified_split(intake, tmp_path):
    batch = intake.batches("qa")[0]
    path = tmp_path / "store" / "tasks" / "qa" / "batches" / batch.batch_id / "train.jsonl"
    path.write_bytes(path.read_bytes().replace(b"elppa", b"apple"))
    assert len(intake.load_split(batch, "eval")) == 1
    with pytest.raises(BatchCorrupted, match="does not match its checksum in batch.json"):
        intake.load_split(batch, "train")


def test_eval_set_is_the_union_of_every_eval_split(intake):
    more = [
        Example(prompt=f"[more] Spell '{w}' backwards.", answer=w[::-1])
        for w in ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta", "iota")
    ]
    second = intake.accept_examples("qa", more, "more words.jsonl")
    first = intake.batches("qa")[0]

    assert [b.batch_id for b in intake.batches("qa")] == [first.batch_id, second.batch_id]
    assert intake.eval_set("qa") == intake.load_split(first, "eval") + intake.load_split(second, "eval")
    assert (second.train_rows + second.eval_rows, len(intake.eval_set("qa"))) == (10, 1 + second.eval_rows)
    assert intake.accept_examples("qa", more, "again.jsonl") == second  # same bytes: the existing batch


def test_accept_examples_raises_batch_rejected_naming_line_and_quarantine(intake):
    examples = [Example(prompt=f"[demo] question {i}", answer="" if i in (2, 5) else "yes") for i in range(9)]
    with pytest.raises(BatchRejected) as info:
        intake.accept_examples("qa", examples, "demo")
    err = info.value
    assert err.location.startswith("quarantine/qa/") and intake.store.exists(err.location + "demo.jsonl")
    assert str(err) == (
        f"demo.jsonl:3: field 'answer' is empty (and 1 more issue); batch {err.report.batch_id} moved to "
        f"{err.location}, nothing deleted"
    )
    assert err.report.problems == ["demo.jsonl:3: field 'answer' is empty", "demo.jsonl:6: field 'answer' is empty"]


def test_number_task_keeps_json_numbers_in_their_written_form(intake):
    lines = [
        json.dumps({"prompt": f"How many letters in '{w}'?", "answer": len(w)})
        for w in ("a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg", "hhhhhhhh")
    ]
    lines.append('{"prompt": "Half of seven?", "answer": 3.50}')
    intake.store.put_new("incoming/count/numbers.jsonl", ("\n".join(lines) + "\n").encode())

    (result,) = intake.ingest("count")

    assert result.status == "accepted", result.message
    answers = {ex.prompt: ex.answer for split in ("train", "eval") for ex in intake.load_split(result.batch, split)}
    assert answers["Half of seven?"] == "3.50" and answers["How many letters in 'ccc'?"] == "3"


def test_a_validator_bug_still_moves_the_file_out_of_the_landing_zone(intake, monkeypatch):
    import skillgraft.data.intake as intake_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(intake_module, "validate_records", broken)
    data = VALID.read_bytes().replace(b"[valid]", b"[bug]")
    intake.store.put_new("incoming/qa/bug.jsonl", data)

    (result,) = intake.ingest("qa")

    assert (result.status, result.report.failed_rules()) == ("quarantined", ["internal_error"])
    assert "validation itself failed (RuntimeError: boom); this is a bug in skillgraft" in result.message
    assert intake.store.get(result.location + "bug.jsonl") == data and intake.incoming() == []
