"""Hostile task data against the real intake, store and CLI (issue 15, items 9, 10, 11, 13): links in the landing zone,
decompression bombs and oversized files, markup in reports, NULs and control characters."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from skillgraft.cli import app
from skillgraft.data import Intake, TaskSpec, read_records, validate_file
from skillgraft.data import io as data_io
from skillgraft.data.io import BinaryFile, ControlCharacter, InvalidParquet, TooLarge
from skillgraft.store import LocalStore

SECRET = "s3cr3t-from-outside-the-store"


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _good_rows(n: int = 12, tag: str = "q") -> list[dict]:
    return [{"prompt": f"{tag} {i} {SECRET}", "answer": str(i)} for i in range(n)]


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, " ".join((result.stdout + result.stderr).split())


@pytest.fixture
def intake(tmp_path: Path) -> Intake:
    intake = Intake(LocalStore(tmp_path / "store"))
    intake.register_task(TaskSpec(name="qa"))
    return intake


def _all_store_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


# --- 9: links in the landing zone ---------------------------------------------------------------------------------


def test_cli_ingest_refuses_a_linked_file_and_a_linked_folder_and_copies_nothing(
    intake: Intake, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.jsonl").write_bytes(_jsonl(_good_rows()))  # valid data: followed, it would be accepted
    (outside / "dir" / "more.jsonl").write_bytes(_jsonl(_good_rows(tag="dir")))
    root = intake.store.root
    (root / "incoming/qa").mkdir(parents=True)
    os.symlink(outside / "secret.jsonl", root / "incoming/qa/evil.jsonl")
    os.symlink(outside / "dir", root / "incoming/qa/sub")

    code, out = _cli("ingest", "--store", str(root))

    assert code == 1, out
    assert "incoming/qa/evil.jsonl is a symbolic link" in out and "incoming/qa/sub is a symbolic link" in out
    assert "never followed or read" in out and "nothing was copied" in out
    assert intake.batches("qa") == []
    assert SECRET.encode() not in _all_store_bytes(root)  # not in a batch, not in quarantine, nowhere
    assert not any(p.is_symlink() for p in root.rglob("*"))  # the links were removed from the landing zone ...
    assert (outside / "secret.jsonl").read_bytes() == _jsonl(_good_rows())  # ... their targets untouched
    assert (outside / "dir" / "more.jsonl").exists()
    reports = [json.loads(p.read_text()) for p in (root / "quarantine/qa").rglob("report.json")]
    assert sorted(r["results"][0]["rule"] for r in reports) == ["unsafe_file", "unsafe_file"]
    assert all("symbolic link" in r["problems"][0] for r in reports)


def test_a_link_outside_any_task_folder_is_refused_into_the_invalid_quarantine(intake: Intake, tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(_jsonl(_good_rows()))
    root = intake.store.root
    (root / "incoming/Bad Task").mkdir(parents=True)
    os.symlink(outside, root / "incoming/stray.jsonl")
    os.symlink(outside, root / "incoming/Bad Task/evil.jsonl")

    results = intake.ingest()

    assert [(r.status, r.task) for r in results] == [("quarantined", "_invalid")] * 2
    assert all(r.location.startswith("quarantine/_invalid/") and "nothing was copied" in r.message for r in results)
    assert intake.incoming() == [] and outside.read_bytes() == _jsonl(_good_rows())


def test_an_image_behind_a_linked_folder_is_refused_not_read(intake: Intake, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(png, format="PNG")
    (outside / "pic.png").write_bytes(png.getvalue())
    root = intake.store.root
    (root / "incoming/qa").mkdir(parents=True)
    os.symlink(outside, root / "incoming/qa/imgs")
    rows = [{"prompt": f"colour {i}?", "answer": "red", "image": "imgs/pic.png"} for i in range(12)]
    intake.store.put_new("incoming/qa/data.jsonl", _jsonl(rows))

    results = {r.key: r for r in intake.ingest("qa")}

    data = results["incoming/qa/data.jsonl"]
    assert data.status == "quarantined"
    assert "image 'imgs/pic.png' is refused: incoming/qa/imgs on its path is a symbolic link" in data.message
    assert data.message.startswith("data.jsonl:1: ")
    assert results["incoming/qa/imgs"].status == "quarantined"  # the linked folder itself is refused too
    assert png.getvalue() not in _all_store_bytes(root)


# --- 10: decompression bombs and oversized files -------------------------------------------------------------------


def _dictionary_bomb(n: int = 4000) -> bytes:
    """One 1 MiB string, dictionary-encoded, used ``n`` times: a file under 1 KB that decodes to ``n`` MiB."""
    big = pa.array(["x" * (1 << 20)])
    table = pa.table({
        "prompt": pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), big),
        "answer": pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array(["a"])),
    })  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=22)
    return buf.getvalue()


def test_dictionary_bomb_is_refused_before_decoding_with_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.parquet"
    bomb.write_bytes(_dictionary_bomb())
    assert bomb.stat().st_size < 1024
    meta = pq.ParquetFile(bomb).metadata
    assert meta.row_group(0).total_byte_size < data_io.MAX_TEXT_BYTES  # the footer sees only the 1 MiB dictionary

    # Through the real intake, in a fresh process, so its peak memory is the bomb's alone (before: 3.9-13.8 GB).
    # VmHWM, not ru_maxrss: Linux carries a parent's ru_maxrss over into a forked and exec'd child.
    script = f"""
import re
from skillgraft.data import Intake, TaskSpec
from skillgraft.store import LocalStore
intake = Intake(LocalStore({str(tmp_path / "store")!r}))
intake.register_task(TaskSpec(name="qa"))
intake.store.put_new("incoming/qa/bomb.parquet", open({str(bomb)!r}, "rb").read())
(result,) = intake.ingest("qa")
print(result.status, "|", result.message)
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())  # this process's own peak RSS
print("peak_mb", int(hwm.group(1)) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True).stdout
    status, message = out.splitlines()[0].split(" | ", 1)
    peak_mb = int(out.split("peak_mb")[1])
    assert status == "quarantined"
    assert "Parquet text decodes to more than 268,435,456 bytes" in message and "column 'prompt'" in message
    assert peak_mb < 700, out  # the decoded prompts alone would be 4,000 MiB


def test_other_parquet_bombs_are_bounded_by_their_page_headers() -> None:
    table = pa.table({"prompt": ["y" * 100_000] * 20, "answer": ["a"] * 20})  # 2 MB of text, compresses to KBs
    plain = io.BytesIO()
    pq.write_table(table, plain, compression="zstd", use_dictionary=False)
    with pytest.raises(TooLarge, match=r"pages decompress to more than 1,000,000 bytes .*by its page headers"):
        read_records(plain.getvalue(), "plain.parquet", max_text_bytes=1_000_000)
    assert len(read_records(plain.getvalue(), "plain.parquet")) == 20  # under the default limit: read

    delta = io.BytesIO()
    pq.write_table(table.slice(0, 2), delta, use_dictionary=False,
                   column_encoding={"prompt": "DELTA_BYTE_ARRAY", "answer": "PLAIN"})  # fmt: skip
    with pytest.raises(InvalidParquet, match=r"DELTA_BYTE_ARRAY encoding, whose decoded size can't be bounded"):
        read_records(delta.getvalue(), "delta.parquet")


def test_ordinary_parquet_files_still_read_whole() -> None:
    table = pa.table({"prompt": [f"q{i}" for i in range(3000)], "answer": [str(i % 7) for i in range(3000)]})
    for options in ({}, {"data_page_version": "2.0", "compression": "snappy"}, {"use_dictionary": False}):
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=700, data_page_size=1000, **options)
        records = read_records(buf.getvalue(), "ok.parquet")
        assert [r.example.prompt for r in records] == table.column("prompt").to_pylist(), options
        assert records[-1].example.answer == "3" and records[-1].line == 3000


def test_row_and_size_limits_refuse_with_a_clear_message_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    spec = tmp_path / "qa.yaml"
    spec.write_text("name: qa\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(_jsonl([{"prompt": f"p{i}", "answer": "a"} for i in range(1001)]))
    monkeypatch.setattr(data_io, "MAX_ROWS", 1000)
    code, out = _cli("validate", "qa", str(rows), "--spec", str(spec), "--store", str(store))
    assert code == 1
    assert "rows.jsonl:1001: file has more than 1,000 examples" in out and "split it into smaller files" in out

    monkeypatch.setattr(data_io, "MAX_ROWS", 1_000_000)
    monkeypatch.setattr(data_io, "MAX_TEXT_BYTES", 5000)
    code, out = _cli("validate", "qa", str(rows), "--spec", str(spec), "--store", str(store))
    assert code == 1
    assert f"rows.jsonl: file is {rows.stat().st_size:,} bytes, over the limit of 5,000" in out
    assert "Traceback" not in out


def test_the_limits_apply_to_csv_and_parquet_too() -> None:
    csv = b"prompt,answer\n" + b"".join(b"p%d,a\n" % i for i in range(11))
    with pytest.raises(TooLarge, match=r"d\.csv:12: file has more than 10 examples"):
        read_records(csv, "d.csv", max_rows=10)
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": [f"p{i}" for i in range(11)], "answer": ["a"] * 11}), buf)
    with pytest.raises(TooLarge, match=r"Parquet file has 11 rows, over the limit of 10"):
        read_records(buf.getvalue(), "d.parquet", max_rows=10)


# --- 11: markup from data in report.html ---------------------------------------------------------------------------

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "\"'><svg onload=alert(3)>"]


def test_quarantine_report_html_escapes_values_labels_and_names(tmp_path: Path) -> None:
    intake = Intake(LocalStore(tmp_path / "store"))
    intake.register_task(TaskSpec(name="lab", answer_type="label", labels=["<i>pos</i>", "neg"]))
    rows = [{"prompt": f"{XSS[i % 3]} #{i}", "answer": XSS[i % 3]} for i in range(12)]
    intake.store.put_new("incoming/lab/x.jsonl", _jsonl(rows))
    (result,) = intake.ingest("lab")
    assert result.status == "quarantined"
    page = intake.store.get(result.location + "report.html").decode()
    assert "Data Docs" in page or "ge-" in page  # the GX page was rendered, not only the summary
    for raw in ("<script>alert", "<img src=x", "<svg onload", "<i>pos"):
        assert raw not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page  # shown as text in GX's table of unexpected values
    assert "&lt;i&gt;pos&lt;/i&gt;" in page and "&amp;lt;" not in page  # escaped exactly once

    hostile_field = _jsonl([{"prompt": "p", "answer": "a", "<script>alert(4)</script>": 1}])
    report = validate_file(hostile_field, TaskSpec(name="qa"), name="<svg onload=alert(5)>.jsonl")
    page = report.to_html()
    assert not report.success and "<script>alert(4)" not in page and "<svg onload=alert(5)" not in page
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in page


# --- 13: NULs and control characters ----------------------------------------------------------------------------------


def test_a_nul_after_the_first_8_kb_of_a_csv_is_refused_through_the_intake(intake: Intake) -> None:
    body = b"prompt,answer\n" + b"".join(b"question number %d,%d\n" % (i, i) for i in range(600))
    assert len(body) > 8192
    body += b"late \x00 nul,1\n"
    intake.store.put_new("incoming/qa/late_nul.csv", body)
    (result,) = intake.ingest("qa")
    assert result.status == "quarantined"
    assert result.message.startswith("late_nul.csv:602: file contains a NUL byte (byte 6 of this line)")
    with pytest.raises(BinaryFile):
        read_records(body, "late_nul.csv")
    jsonl = _jsonl(_good_rows(300)) + b'{"prompt": "raw \x00 nul", "answer": "1"}\n'
    assert jsonl.index(b"\x00") > 8192
    with pytest.raises(BinaryFile, match=r"x\.jsonl:301: file contains a NUL byte \(byte 17 of this line\)"):
        read_records(jsonl, "x.jsonl")


def test_control_characters_in_text_name_the_line_and_field_in_every_format() -> None:
    jsonl = _jsonl([{"prompt": "ok", "answer": "fine"}, {"prompt": "red \u001b[31m text", "answer": "x"},
                    {"prompt": "p", "answer": "nul \u0000 escaped"}])  # fmt: skip
    with pytest.raises(ControlCharacter) as caught:
        read_records(jsonl, "c.jsonl")
    problems = [e.problem for e in caught.value.all_errors()]
    assert problems[0].startswith("c.jsonl:2: field 'prompt' contains control character U+001B (ESC")
    assert problems[1].startswith("c.jsonl:3: field 'answer' contains control character U+0000 (NUL)")

    csv = b'prompt,answer\nbell \x07 here,1\nok,2\n"tab\tand\nnewline",3\nback\x08space,4\n'
    with pytest.raises(ControlCharacter) as caught:
        read_records(csv, "c.csv")
    assert [(e.line, e.field) for e in caught.value.all_errors()] == [(2, "prompt"), (6, "prompt")]

    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["fine", "csi \u009b2J"], "answer": ["a", "b"]}), buf)
    with pytest.raises(ControlCharacter, match=r"row 2: field 'prompt' contains control character U\+009B"):
        read_records(buf.getvalue(), "c.parquet")


def test_tab_newline_and_carriage_return_stay_allowed() -> None:
    records = read_records(_jsonl([{"prompt": "a\tb\nc\r\nd", "answer": "e"}]), "ok.jsonl")
    assert records[0].example.prompt == "a\tb\nc\r\nd"
    csv = read_records(b'prompt,answer\n"multi\nline\twith tab",1\n', "ok.csv")
    assert csv[0].example.prompt == "multi\nline\twith tab"


def test_cli_validate_reports_a_control_character_without_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "qa.yaml"
    spec.write_text("name: qa\n")
    data = tmp_path / "esc.jsonl"
    data.write_bytes(_jsonl([*_good_rows(), {"prompt": "clear \u001b[2J screen", "answer": "1"}]))
    code, out = _cli("validate", "qa", str(data), "--spec", str(spec), "--store", str(tmp_path / "store"))
    assert code == 1
    assert "esc.jsonl:13: field 'prompt' contains control character U+001B" in out
    assert "\x1b" not in out and "Traceback" not in out
