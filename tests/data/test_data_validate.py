"""The GX suite built from a task spec, the split check recorded beside it, and the report's HTML."""

from __future__ import annotations

import subprocess
import sys

from skillgraft.data import Example, TaskSpec, build_suite, example_key, validate_file, validate_records
from skillgraft.data.io import Record


def _records(pairs):
    return [Record(i + 1, Example(prompt=p, answer=a)) for i, (p, a) in enumerate(pairs)]


def test_suite_is_built_from_the_spec():
    spec = TaskSpec(name="sentiment", answer_type="label", labels=["pos", "neg"], max_prompt_chars=300)
    suite = build_suite(spec, existing_eval_keys=["0123456789abcdef"])
    found = {(e.expectation_type, e.meta["rule"], getattr(e, "column", None)) for e in suite.expectations}
    assert found == {
        ("expect_column_to_exist", "required_columns", "prompt"),
        ("expect_column_to_exist", "required_columns", "answer"),
        ("expect_table_row_count_to_be_between", "min_rows", None),
        ("expect_column_values_to_not_be_null", "not_null", "prompt"),
        ("expect_column_values_to_not_be_null", "not_null", "answer"),
        ("expect_column_values_to_match_regex", "not_empty", "prompt"),
        ("expect_column_values_to_match_regex", "not_empty", "answer"),
        ("expect_column_value_lengths_to_be_between", "max_length", "prompt"),
        ("expect_column_value_lengths_to_be_between", "max_length", "answer"),
        ("expect_column_values_to_be_in_set", "label_set", "answer"),
        ("expect_column_values_to_be_unique", "duplicates", "key"),
        ("expect_column_values_to_not_be_in_set", "leakage", "key"),
    }
    by_rule = {e.meta["rule"]: e for e in suite.expectations}
    assert by_rule["label_set"].value_set == ["pos", "neg"]
    assert by_rule["leakage"].value_set == ["0123456789abcdef"]
    assert [e.max_value for e in suite.expectations if e.meta["rule"] == "max_length"] == [300, 200]

    relaxed = build_suite(TaskSpec(name="n", answer_type="number", allow_duplicates=True))
    rules = [e.meta["rule"] for e in relaxed.expectations]
    assert "number_format" in rules and "duplicates" not in rules and "label_set" not in rules


def test_number_format_accepts_decimals_and_rejects_words_units_and_separators():
    answers = ["42", "-3.5", "+0.25", ".5", "1e3", "7.", "three", "1,000", "5 kg", " 4", "4\n", ""]
    pairs = [(f"q{i}", a) for i, a in enumerate(answers)]
    report = validate_file(
        "".join(f'{{"prompt": "{p}", "answer": {a!r}}}\n'.replace("'", '"') for p, a in pairs).encode(),
        TaskSpec(name="n", answer_type="number"),
        name="n.jsonl",
    )
    flagged = [p.split(": ", 1)[0] for p in report.problems if "not a number" in p]
    assert flagged == [f"n.jsonl:{i}" for i in (7, 8, 9, 10, 11, 12)]  # "" is also reported by not_empty
    assert report.failed_rules() == ["not_empty", "number_format"]


def test_split_overlap_is_checked_outside_gx_and_recorded_in_the_report():
    records = _records([(f"p{i}", "a") for i in range(8)])
    sides = ["train"] * 6 + ["eval"] * 2
    trained_before = {example_key(records[7].example)[:16]: "0000aaaa1111bbbb"}

    report = validate_records(
        records,
        sides,
        TaskSpec(name="t", allow_duplicates=True),
        file="t.jsonl",
        batch_id="b" * 16,
        existing_train=trained_before,
    )
    assert report.failed_rules() == ["split_overlap"]
    assert report.problems == [
        "t.jsonl:8: prompt falls in the eval part but was trained on in batch 0000aaaa1111bbbb: remove it"
    ]

    dup = _records([(f"p{i}", "a") for i in range(7)] + [("p0", "a")])
    report = validate_records(
        dup, ["train"] * 7 + ["eval"], TaskSpec(name="t", allow_duplicates=True), file="t.jsonl", batch_id="c" * 16
    )
    assert report.problems == ["t.jsonl:8: prompt is in both the train and the eval part of this batch"]
    (overlap,) = [r for r in report.results if r.rule == "split_overlap"]
    assert (overlap.success, overlap.observed) == (False, 1)


def test_report_counts_every_issue_and_lists_table_problems_first():
    pairs = [("same", "a"), ("same", "b"), ("x" * 30, "a")]
    report = validate_records(
        _records(pairs),
        ["train", "train", "eval"],
        TaskSpec(name="t", max_prompt_chars=20),
        file="t.jsonl",
        batch_id="d" * 16,
    )
    assert report.problems == [
        "t.jsonl: has 3 examples; task 't' needs at least 8 (min_rows): add examples or merge files",
        "t.jsonl:2: same prompt as line 1 but a different answer ('a' vs 'b'): keep one",
        "t.jsonl:3: field 'prompt' is 30 characters, over the task's max_prompt_chars=20: shorten it",
    ]
    assert report.issue_count == 3
    assert report.headline() == report.problems[0] + " (and 2 more issues)"


def test_report_html_is_gx_data_docs_with_the_summary_on_top():
    report = validate_file(b'{"prompt": "a", "answer": ""}\n', TaskSpec(name="t"), name="t.jsonl")
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and "Data documentation compiled by Great Expectations" in page
    summary = page.index(
        "<body><div class='container-fluid' style='padding:1em'><h2>skillgraft validation: t.jsonl — REJECTED"
    )
    assert summary < page.index("Overview") < page.index("must match this regular expression")
    assert "t.jsonl:1: field &#x27;answer&#x27; is empty" in page
    assert "skillgraft.t" in page  # the suite name, from GX's renderer

    parse_failed = validate_file(b"{oops\n", TaskSpec(name="t"), name="t.jsonl")
    assert parse_failed.failed_rules() == ["parse"] and parse_failed.gx_results == {}
    assert "t.jsonl:1: invalid JSON at column 2" in parse_failed.to_html()


def test_importing_the_data_package_loads_neither_prefect_nor_gx():
    code = (
        "import sys, skillgraft.data; print(sorted(m for m in ('prefect', 'great_expectations') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
