"""Task specs, reading JSONL/CSV/Parquet, and the deterministic split (no GX, no store)."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from skillgraft.data import DataError, Example, TaskSpec, TaskSpecError, assign_sides, read_examples, read_records
from skillgraft.data.io import InvalidJson, LineTooLong, WrongType


def test_label_task_needs_labels_and_other_tasks_refuse_them():
    with pytest.raises(ValidationError, match="answer_type 'label' needs a non-empty `labels` list"):
        TaskSpec(name="s", answer_type="label")
    with pytest.raises(ValidationError, match="`labels` is only used with answer_type 'label'.*remove labels"):
        TaskSpec(name="s", labels=["a"])
    with pytest.raises(ValidationError, match=r"labels repeat \['a'\]"):
        TaskSpec(name="s", answer_type="label", labels=["a", "a"])
    with pytest.raises(ValidationError, match="eval_fraction must be between 0 and 1.*try 0.2"):
        TaskSpec(name="s", eval_fraction=0)
    with pytest.raises(ValidationError, match="min_rows must be at least 2"):
        TaskSpec(name="s", min_rows=1)


def test_task_spec_from_yaml_names_the_file_and_every_wrong_field(tmp_path):
    good = tmp_path / "sentiment.yaml"
    good.write_text("name: sentiment\nanswer_type: label\nlabels: [positive, negative]\neval_fraction: 0.25\n")
    spec = TaskSpec.from_yaml(good)
    assert (spec.name, spec.labels, spec.eval_fraction, spec.min_rows) == (
        "sentiment",
        ["positive", "negative"],
        0.25,
        8,
    )

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\nanswer_type: words\nmin_row: 3\n")
    with pytest.raises(TaskSpecError) as info:
        TaskSpec.from_yaml(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: invalid task spec:")
    assert "name: Value error, invalid task name 'Bad Name'" in message
    assert "answer_type: Input should be 'text', 'label' or 'number'" in message
    assert "min_row: Extra inputs are not permitted" in message

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(TaskSpecError, match=f"{broken}: invalid YAML"):
        TaskSpec.from_yaml(broken)


def test_jsonl_problems_are_all_collected_with_their_lines():
    data = (
        b'{"prompt": "ok", "answer": "1"}\n'
        b"\n"
        b'{"prompt": "a", "answer": true}\n'
        b'{"prompt": "b" "answer": "x"}\n'
        b'{"prompt": "c", "Answer": "y"}\n'
    )
    with pytest.raises(WrongType) as info:
        read_examples(data, "d.jsonl")
    err = info.value
    assert [e.problem for e in err.all_errors()] == [
        "d.jsonl:3: field 'answer' is the boolean true: write it as a string",
        "d.jsonl:4: invalid JSON at column 16: Expecting ',' delimiter",
        (
            "d.jsonl:5: unknown field 'Answer' (did you mean 'answer'?): examples have fields 'prompt', 'answer' "
            "and optionally 'image'; rename or drop it"
        ),
        "d.jsonl:5: field 'answer' is missing",
    ]
    assert str(err).endswith("(and 3 more issues)")
    assert (err.file, err.line, err.field, err.code) == ("d.jsonl", 3, "answer", "wrong_type")


def test_a_too_long_line_is_refused_and_reading_goes_on():
    data = b'{"prompt": "' + b"x" * 5000 + b'", "answer": "1"}\n{"prompt": "b", "answer": 2}\n'
    with pytest.raises(LineTooLong) as info:
        read_examples(data, "d.jsonl", max_line_bytes=1000)
    assert [(e.code, e.line) for e in info.value.all_errors()] == [("line_too_long", 1), ("wrong_type", 2)]
    assert "line is 5,029 bytes, over the limit of 1,000" in str(info.value)


def test_json_numbers_are_answers_only_for_number_tasks():
    data = b'\xef\xbb\xbf{"prompt": "p", "answer": -3.50}\r\n{"prompt": "q", "answer": 12345678901234567890123}\r\n'
    assert [ex.answer for ex in read_examples(data, "n.jsonl", answer_type="number")] == [
        "-3.50",
        "12345678901234567890123",
    ]
    with pytest.raises(WrongType, match=r'field \'answer\' is the number -3.50: write it as a string: "-3.50"'):
        read_examples(data, "n.jsonl", answer_type="label")


def test_csv_keeps_the_line_where_each_row_starts():
    data = b'prompt,answer,image\n"two\nlines",a,\n\nplain,b,img/1.png\n'
    records = read_records(data, "d.csv")
    assert [(r.line, r.example) for r in records] == [
        (2, Example(prompt="two\nlines", answer="a")),
        (5, Example(prompt="plain", answer="b", image="img/1.png")),
    ]


def test_parquet_rows_are_read_and_wrong_types_named():
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["p", None], "answer": [7, 8]}), buf)
    with pytest.raises(DataError) as info:
        read_examples(buf.getvalue(), "d.parquet", answer_type="number")
    assert info.value.problem == "d.parquet: row 2: field 'prompt' is null"

    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["p", "q"], "answer": [[1], [2]]}), buf)
    with pytest.raises(WrongType, match="column 'answer' has type list<element: int64>; expected string"):
        read_examples(buf.getvalue(), "d.parquet", answer_type="number")


def test_invalid_json_never_escapes_as_a_raw_error():
    for bad in (b"{", b'{"prompt": "\\ud800", "answer": "x"}', b'"just a string"', b"[" * 100_000):
        with pytest.raises(DataError):
            read_examples(bad + b"\n", "d.jsonl")
    with pytest.raises(InvalidJson, match="nested too deeply"):
        read_examples(b"[" * 100_000 + b"\n", "d.jsonl")


def test_split_is_a_function_of_the_prompt_alone():
    prompts = [f"prompt {i}" for i in range(1000)]
    sides = assign_sides([Example(prompt=p, answer="x") for p in prompts], 0.2)
    assert sides.count("eval") == 209
    expected = [
        "eval" if int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) / 2**32 < 0.2 else "train" for p in prompts
    ]
    assert sides == expected
    # the same prompt lands on the same side in another batch, whatever its neighbours
    again = assign_sides([Example(prompt=p, answer="y") for p in prompts[500:] + ["new"]], 0.2)
    assert again[:500] == sides[500:]


def test_split_keys_include_the_image():
    same_prompt = [Example(prompt="What is shown?", answer="x", image=f"img/{i}.png") for i in range(40)]
    sides = assign_sides(same_prompt, 0.2)
    assert sides.count("eval") == 7 and sides.count("train") == 33
