"""Reading task data files into examples: JSON Lines, CSV and Parquet, chosen by the file's extension.

Every problem is a :class:`DataError` naming the file, the line (or Parquet row), the field and the rule broken;
malformed input never escapes as a raw ``json``/``csv``/``pyarrow`` traceback. Problems on single lines are collected
(up to :data:`MAX_ISSUES`) and raised once: the first as the exception, the rest in its ``more`` list.

Accepted shapes (``image`` is optional everywhere)::

    data.jsonl     {"prompt": "2+2=", "answer": "4"}            one JSON object per line; blank lines are skipped
    data.csv       prompt,answer                                  a header naming the columns, then one row each
    data.parquet   columns prompt, answer (strings)

Types: ``prompt`` and ``answer`` are strings. For a task with ``answer_type: number`` a JSON or Parquet number is
accepted as an answer and kept in its written form (``4``, ``-3.5``); everywhere else a number, boolean, list or
object is an error that says what to write instead, and so is ``null``.

Limits: a line longer than :data:`MAX_LINE_BYTES` is refused after reading at most that many bytes of it (it never
reaches the JSON parser); encodings other than UTF-8 (a UTF-8 byte-order mark is fine) are refused with the line
of the first bad byte; a NUL byte anywhere in a JSONL or CSV file makes it binary, refused with its line. A file of
more than :data:`MAX_ROWS` examples or :data:`MAX_TEXT_BYTES` bytes (of decoded text, for Parquet) is refused as
:class:`TooLarge`; a Parquet file's decoded size is bounded from its page headers and dictionaries before any value is
materialised, never from the footer's claim alone.

Text: ``prompt``, ``answer`` and ``image`` may not contain control characters other than tab, newline and carriage
return (C0 ``U+0000-U+001F``, DEL, C1 ``U+0080-U+009F``: NULs and terminal escape sequences); each one is a
:class:`ControlCharacter` problem naming the line and field.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, ClassVar, Literal, NamedTuple

from skillgraft.data.spec import Example

MAX_LINE_BYTES = 1_000_000
"""Longest accepted line (bytes, without the newline) of a JSONL or CSV file."""
MAX_ISSUES = 100
"""Problems collected from one file before reading stops."""
MAX_ROWS = 1_000_000
"""Most examples accepted in one file, any format. Larger files are refused before they are read further: split
them."""
MAX_TEXT_BYTES = 256 << 20
"""Largest JSONL/CSV file, and most decoded text in a Parquet file (bytes). The intake holds a file's bytes in memory
once (they are stored beside the batch) and validates it :data:`CHUNK_ROWS` examples at a time. A Parquet file is
checked before its data is decoded (see :func:`_parquet_bounds`)."""
CHUNK_ROWS = 50_000
"""Examples parsed and validated at a time (:func:`iter_records`): a chunk costs about 2.5 KB of memory per example
on top of its text."""

FIELDS = ("prompt", "answer", "image")
REQUIRED = ("prompt", "answer")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

AnswerType = Literal["text", "label", "number"]


class DataError(ValueError):
    """A problem with a data file: where it is (file, line or row, field), what rule it breaks, what to do.

    ``code`` names the rule (``invalid_json``, ``missing_field``...). ``more`` holds the further problems found in
    the same file and ``uncounted`` how many more were seen after :data:`MAX_ISSUES`.
    """

    code: ClassVar[str] = "data"

    def __init__(
        self,
        file: str,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        unit: Literal["line", "row"] = "line",
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.unit = unit
        self.message = message
        self.more: list[DataError] = []
        self.uncounted = 0
        super().__init__(self.problem)

    @property
    def location(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}" if self.unit == "line" else f"{self.file}: row {self.line}"

    @property
    def problem(self) -> str:
        """This problem alone, as one human line: ``data.jsonl:17: field 'answer' is a list; ...``."""
        return f"{self.location}: {self.message}"

    @property
    def issue_count(self) -> int:
        return 1 + len(self.more) + self.uncounted

    def all_errors(self) -> list[DataError]:
        return [self, *self.more]

    def __str__(self) -> str:
        extra = self.issue_count - 1
        return self.problem + (f" (and {extra} more issue{'s' * (extra > 1)})" if extra else "")


class UnsupportedFormat(DataError):
    code = "unsupported_format"


class EmptyFile(DataError):
    code = "empty"


class BinaryFile(DataError):
    code = "binary"


class NotUTF8(DataError):
    code = "encoding"


class LineTooLong(DataError):
    code = "line_too_long"


class InvalidJson(DataError):
    code = "invalid_json"


class InvalidCsv(DataError):
    code = "invalid_csv"


class InvalidParquet(DataError):
    code = "invalid_parquet"


class ImageError(DataError):
    """An example's image is missing, unsafe to reference, or not a usable image."""

    code = "image"


class TooLarge(DataError):
    code = "too_large"


class ControlCharacter(DataError):
    code = "control_character"


class UnknownField(DataError):
    code = "unknown_field"


class MissingField(DataError):
    code = "missing_field"


class WrongType(DataError):
    code = "wrong_type"


class Record(NamedTuple):
    """An example and where it came from: the line of a JSONL/CSV file, or the row (1-based) of a Parquet file."""

    line: int
    example: Example
    unit: Literal["line", "row"] = "line"

    def location(self, file: str) -> str:
        return f"{file}:{self.line}" if self.unit == "line" else f"{file}: row {self.line}"


def file_format(name: str) -> str:
    """``jsonl``, ``csv`` or ``parquet`` from a file name's extension; raises :class:`UnsupportedFormat`."""
    ext = os.path.splitext(name)[1].lower()
    if ext in FORMATS:
        return FORMATS[ext]
    hint = (
        'a .json file must be JSON Lines: one {"prompt": ..., "answer": ...} object per line, named .jsonl'
        if ext == ".json"
        else "use .jsonl (one JSON object per line), .csv (a header row: prompt,answer) or .parquet"
    )
    raise UnsupportedFormat(name, f"unsupported file type {ext or '(no extension)'!r}: {hint}")


def read_examples(
    source: bytes | str | os.PathLike[str],
    name: str | None = None,
    *,
    answer_type: AnswerType = "text",
    max_line_bytes: int = MAX_LINE_BYTES,
    max_rows: int | None = None,
    max_text_bytes: int | None = None,
) -> list[Example]:
    """The examples of a data file (a path, or its bytes plus its file ``name``); raises :class:`DataError`."""
    records = read_records(source, name, answer_type=answer_type, max_line_bytes=max_line_bytes, max_rows=max_rows,
                           max_text_bytes=max_text_bytes)  # fmt: skip
    return [r.example for r in records]


def read_records(
    source: bytes | str | os.PathLike[str],
    name: str | None = None,
    *,
    answer_type: AnswerType = "text",
    max_line_bytes: int = MAX_LINE_BYTES,
    max_rows: int | None = None,
    max_text_bytes: int | None = None,
) -> list[Record]:
    """Like :func:`read_examples`, keeping each example's line (or row) for error messages.

    ``max_rows`` / ``max_text_bytes``: None for :data:`MAX_ROWS` / :data:`MAX_TEXT_BYTES` (read when called)."""
    chunks = iter_records(source, name, answer_type=answer_type, max_line_bytes=max_line_bytes, max_rows=max_rows,
                          max_text_bytes=max_text_bytes, chunk_rows=None)  # fmt: skip
    return [r for chunk in chunks for r in chunk]


def iter_records(
    source: bytes | str | os.PathLike[str],
    name: str | None = None,
    *,
    answer_type: AnswerType = "text",
    max_line_bytes: int = MAX_LINE_BYTES,
    max_rows: int | None = None,
    max_text_bytes: int | None = None,
    chunk_rows: int | None = CHUNK_ROWS,
) -> Iterator[list[Record]]:
    """The records of a data file in lists of at most ``chunk_rows`` (None: one list), read as they are yielded.

    JSON Lines and CSV are parsed chunk by chunk, so only one chunk of examples is in memory at a time; Parquet is
    decoded whole (its decoded size is bounded first) and then handed out in chunks. Problems on single lines are
    collected over the whole file and raised (:class:`DataError`) after the last chunk: a caller that acts on chunks
    must not keep anything until the iterator is exhausted.
    """
    max_rows = MAX_ROWS if max_rows is None else max_rows
    max_text_bytes = MAX_TEXT_BYTES if max_text_bytes is None else max_text_bytes
    if isinstance(source, (bytes, bytearray, memoryview)):
        if name is None:
            raise TypeError("read_records(bytes) needs the file name (its extension picks the format)")
        stream: IO[bytes] = io.BytesIO(source)
    else:
        name = name or Path(source).name
        stream = open(source, "rb")  # noqa: SIM115 - closed below
    with stream:
        fmt = file_format(name)
        size = stream.seek(0, os.SEEK_END)
        if size > max_text_bytes:
            raise TooLarge(
                name,
                f"file is {size:,} bytes, over the limit of {max_text_bytes:,} for one data file: split it into "
                "smaller files; nothing of it was used",
            )
        stream.seek(0)
        _sniff(stream.read(8192), name, fmt)
        stream.seek(0)
        issues = _Issues()
        if fmt == "jsonl":
            rows: Iterator[Record] = _read_jsonl(stream, name, answer_type, max_line_bytes, max_rows, issues)
        elif fmt == "csv":
            rows = _read_csv(stream, name, max_line_bytes, max_rows, issues)
        else:
            rows = iter(_read_parquet(stream.read(), name, answer_type, max_rows, max_text_bytes, issues))
        chunk: list[Record] = []
        total = 0
        for record in rows:
            chunk.append(record)
            if chunk_rows is not None and len(chunk) >= chunk_rows:
                total += len(chunk)
                yield chunk
                chunk = []
        total += len(chunk)
    issues.raise_if_any()
    if not total:
        raise EmptyFile(name, "file has no examples (only blank lines or a header)")
    if chunk or chunk_rows is None:
        yield chunk


# --- shared -------------------------------------------------------------------------------------------------------


class _Issues:
    """Collects line-level problems; raises the first with the others attached."""

    def __init__(self, limit: int = MAX_ISSUES) -> None:
        self.limit = limit
        self.found: list[DataError] = []
        self.uncounted = 0

    def add(self, err: DataError) -> None:
        for e in err.all_errors():
            if len(self.found) < self.limit:
                self.found.append(e)
            else:
                self.uncounted += 1
        self.uncounted += err.uncounted

    @property
    def full(self) -> bool:
        return len(self.found) >= self.limit

    def raise_if_any(self) -> None:
        if self.found:
            first, *rest = self.found
            first.more = rest
            first.uncounted = self.uncounted
            raise first


def _sniff(head: bytes, file: str, fmt: str) -> None:
    """Refuse empty, binary and non-UTF-8-looking files from their first bytes."""
    if not head.strip():
        raise EmptyFile(file, "file is empty: expected examples with a prompt and an answer")
    if fmt == "parquet":
        return
    if head.startswith(b"PAR1"):
        raise BinaryFile(file, f"file is Parquet data but named as {fmt.upper()}: rename it to .parquet")
    if head.startswith(b"\x1f\x8b"):
        raise BinaryFile(file, "file is gzip-compressed: decompress it before submitting")
    if head.startswith((b"PK\x03\x04", b"\x89PNG", b"\xff\xd8\xff", b"%PDF")):
        raise BinaryFile(file, f"file is an archive, image or PDF, not {fmt.upper()} text")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise NotUTF8(file, "file is UTF-16 text: re-save it as UTF-8")
    if b"\x00" in head:
        nul = head.index(b"\x00")
        raise BinaryFile(
            file,
            f"file contains NUL bytes (first at byte {nul}): it is binary data or UTF-16/32 text, not UTF-8 "
            f"{fmt.upper()}",
            line=head.count(b"\n", 0, nul) + 1,
        )


def _lines(stream: IO[bytes], file: str, limit: int) -> Iterator[tuple[int, str | LineTooLong]]:
    """``(line number, text without newline)``, or a :class:`LineTooLong` in place of a line over ``limit`` bytes.

    Reads at most ``limit + 1`` bytes of any line into memory (the rest of a too-long line is skipped in chunks).
    Raises :class:`NotUTF8` at the first line that is not UTF-8.
    """
    lineno = 0
    while True:
        raw = stream.readline(limit + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            size = len(raw)
            while (chunk := stream.readline(1 << 20)) and not chunk.endswith(b"\n"):
                size += len(chunk)
            size += len(chunk) - chunk.endswith(b"\n")
            yield (
                lineno,
                LineTooLong(
                    file,
                    f"line is {size:,} bytes, over the limit of {limit:,}: split long records or shorten the text "
                    "(is this file missing its line breaks?)",
                    line=lineno,
                ),
            )
            continue
        raw = raw.rstrip(b"\r\n")
        if (nul := raw.find(b"\x00")) >= 0:  # anywhere, not only in the first 8 KB that _sniff sees
            raise BinaryFile(
                file,
                f"file contains a NUL byte (byte {nul + 1} of this line): it is binary data or "
                "UTF-16/32 text, not UTF-8 text; nothing of it was used",
                line=lineno,
            )
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = raw[e.start]
            raise NotUTF8(
                file,
                f"file is not UTF-8 (byte 0x{bad:02x} at column {e.start + 1} of this line; the file may be "
                "Latin-1 or Windows-1252): re-save it as UTF-8",
                line=lineno,
            ) from None
        yield lineno, text


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name.strip().lower(), FIELDS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_names(
    names: list[str], file: str, *, kind: str, line: int | None, unit: Literal["line", "row"] = "line"
) -> list[DataError]:
    """Unknown and missing fields (or columns) among ``names``."""
    errors: list[DataError] = []
    for n in names:
        if n not in FIELDS:
            errors.append(
                UnknownField(
                    file,
                    f"unknown {kind} {n!r}{_suggest(n)}: examples have {kind}s 'prompt', 'answer' and optionally "
                    f"'image'; rename or drop it",
                    line=line,
                    field=n,
                    unit=unit,
                )
            )
    for n in REQUIRED:
        if n not in names:
            errors.append(MissingField(file, f"{kind} {n!r} is missing", line=line, field=n, unit=unit))
    return errors


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {0: "NUL", 7: "BEL", 8: "backspace", 0x1B: "ESC, starts terminal escape sequences", 0x7F: "DEL",
                  0x9B: "CSI, starts terminal escape sequences"}  # fmt: skip


def _check_text(value: str, file: str, field: str, line: int, unit: Literal["line", "row"]) -> str:
    if m := _CONTROL.search(value):
        code = ord(m.group())
        name = _CONTROL_NAMES.get(code) or unicodedata.name(m.group(), "a control character")
        count = len(_CONTROL.findall(value))
        raise ControlCharacter(
            file,
            f"field {field!r} contains control character U+{code:04X} ({name}) at character {m.start() + 1}"
            + (f", and {count - 1} more" if count > 1 else "")
            + ": only tab, newline and carriage return are allowed in text; remove it",
            line=line,
            field=field,
            unit=unit,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise WrongType(
            file,
            f"field {field!r} contains an unpaired surrogate (\\ud800-\\udfff): not valid Unicode text",
            line=line,
            field=field,
            unit=unit,
        ) from None
    return value


def _raise_all(errors: list[DataError]) -> None:
    if errors:
        first, *rest = errors
        first.more = rest
        raise first


# --- JSON Lines ---------------------------------------------------------------------------------------------------


class _JsonNumber(str):
    """A JSON number, kept in its written form (never converted: no float rounding, no huge-int limits)."""


class _JsonConstant(str):
    """NaN, Infinity or -Infinity, which JSON does not allow but Python's parser does."""


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise _DuplicateKey(k)
        obj[k] = v
    return obj


def _json_type(value: Any) -> str:
    if isinstance(value, _JsonConstant):
        return f"{value} (not valid JSON)"
    if isinstance(value, _JsonNumber):
        return f"the number {value}"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _too_many_rows(file: str, max_rows: int, line: int, unit: Literal["line", "row"] = "line") -> TooLarge:
    return TooLarge(
        file,
        f"file has more than {max_rows:,} examples, the most one file may hold (validation keeps every example in "
        "memory): split it into smaller files; nothing of it was used",
        line=line,
        unit=unit,
    )


def _read_jsonl(
    stream: IO[bytes], file: str, answer_type: AnswerType, limit: int, max_rows: int, issues: _Issues
) -> Iterator[Record]:
    rows = 0
    for lineno, text in _lines(stream, file, limit):
        if issues.full:
            break
        if isinstance(text, LineTooLong):
            issues.add(text)  # the stream is already past that line: carry on with the next one
            continue
        if not text.strip():
            continue
        if rows >= max_rows:
            raise _too_many_rows(file, max_rows, lineno)
        try:
            record = Record(lineno, _json_example(text, file, lineno, answer_type))
        except DataError as e:
            issues.add(e)
            continue
        rows += 1
        yield record


def _json_example(text: str, file: str, line: int, answer_type: AnswerType) -> Example:
    try:
        obj = json.loads(
            text,
            parse_int=_JsonNumber,
            parse_float=_JsonNumber,
            parse_constant=_JsonConstant,
            object_pairs_hook=_object,
        )
    except json.JSONDecodeError as e:
        raise InvalidJson(file, f"invalid JSON at column {e.colno}: {e.msg}", line=line) from None
    except RecursionError:
        raise InvalidJson(file, "invalid JSON: nested too deeply", line=line) from None
    except _DuplicateKey as e:
        raise InvalidJson(file, f"field {e.key!r} appears twice in one object", line=line, field=e.key) from None
    if not isinstance(obj, dict):
        raise WrongType(
            file,
            f"line is {_json_type(obj) if not isinstance(obj, str) else 'a string'}, expected an object like "
            '{"prompt": "...", "answer": "..."}',
            line=line,
        )
    errors = _check_names(list(obj), file, kind="field", line=line)
    values: dict[str, str | None] = {}
    for field in FIELDS:
        if field not in obj:
            continue
        value = obj[field]
        try:
            values[field] = _json_value(value, field, answer_type, file, line)
        except DataError as e:
            errors.append(e)
    _raise_all(errors)
    return Example.model_validate(values)


def _json_value(value: Any, field: str, answer_type: AnswerType, file: str, line: int) -> str | None:
    if isinstance(value, _JsonNumber) and field == "answer" and answer_type == "number":
        return str(value)
    if isinstance(value, str) and not isinstance(value, (_JsonNumber, _JsonConstant)):
        return _check_text(value, file, field, line, "line")
    if value is None:
        if field == "image":
            return None
        raise MissingField(file, f"field {field!r} is null: give a string", line=line, field=field)
    fix = "write it as a string"
    if isinstance(value, _JsonNumber):
        fix = f'write it as a string: "{value}"' + (
            " (numbers are accepted as answers only when the task's answer_type is number)" if field == "answer" else ""
        )
    raise WrongType(file, f"field {field!r} is {_json_type(value)}: {fix}", line=line, field=field)


# --- CSV ----------------------------------------------------------------------------------------------------------


def _read_csv(stream: IO[bytes], file: str, limit: int, max_rows: int, issues: _Issues) -> Iterator[Record]:
    reader = csv.reader(_csv_text(_lines(stream, file, limit)), strict=True)
    header: list[str] | None = None
    rows = 0
    last_line = 0
    try:
        for row in reader:
            start, last_line = last_line + 1, reader.line_num
            if not row or (header is None and not "".join(row).strip()):
                continue
            if header is None:
                header = row
                errors = _check_names(header, file, kind="column", line=start)
                if dupes := sorted({h for h in header if header.count(h) > 1}):
                    errors.append(InvalidCsv(file, f"header repeats column(s) {dupes}", line=start))
                _raise_all(errors)
                continue
            if len(row) != len(header):
                issues.add(
                    InvalidCsv(
                        file,
                        f"row has {len(row)} fields but the header has {len(header)}: quote values that contain "
                        'commas ("a, b")',
                        line=start,
                    )
                )
            else:
                if rows >= max_rows:
                    raise _too_many_rows(file, max_rows, start)
                try:
                    values = {h: _check_text(v, file, h, start, "line") for h, v in zip(header, row)}
                except DataError as e:  # a problem in this row only: report it, read on
                    issues.add(e)
                    if issues.full:
                        break
                    continue
                rows += 1
                yield Record(
                    start, Example(prompt=values["prompt"], answer=values["answer"], image=values.get("image") or None)
                )
            if issues.full:
                break
    except csv.Error as e:
        issues.add(InvalidCsv(file, f"malformed CSV: {e} (check the quoting)", line=reader.line_num or 1))
    except TooLarge:
        raise
    except DataError as e:  # a too-long line or bad encoding: the rest of the file cannot be trusted
        issues.add(e)
    if header is None and not issues.found:
        raise EmptyFile(file, "file has no header row: expected a first line 'prompt,answer'")


def _csv_text(lines: Iterator[tuple[int, str | LineTooLong]]) -> Iterator[str]:
    for _, text in lines:
        if isinstance(text, LineTooLong):
            raise text
        yield text + "\n"


# --- Parquet ------------------------------------------------------------------------------------------------------


def _read_parquet(
    data: bytes, file: str, answer_type: AnswerType, max_rows: int, max_text_bytes: int, issues: _Issues
) -> list[Record]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if len(data) < 12 or not (data.startswith(b"PAR1") and data.endswith(b"PAR1")):
        raise InvalidParquet(
            file,
            "not a Parquet file (the PAR1 markers at its start and end are missing): "
            "is it truncated, or another format renamed to .parquet?",
        )
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
        meta = pf.metadata
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InvalidParquet(file, f"cannot read the Parquet footer: {e}") from None
    if meta.num_rows == 0:
        raise EmptyFile(file, "Parquet file has no rows")
    if meta.num_rows > max_rows:
        raise TooLarge(
            file,
            f"Parquet file has {meta.num_rows:,} rows, over the limit of {max_rows:,} examples per file: split it; "
            "nothing of it was used",
        )

    errors = _check_names(schema.names, file, kind="column", line=None)
    textual_columns: list[str] = []
    for name in FIELDS:
        if name not in schema.names:
            continue
        t = schema.field(name).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        textual = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        if textual:
            textual_columns.append(name)
        if textual or pa.types.is_null(t) or (numeric and name == "answer" and answer_type == "number"):
            continue
        hint = " (numeric answers are accepted only when the task's answer_type is number)" if numeric else ""
        errors.append(WrongType(file, f"column {name!r} has type {t}; expected string{hint}", field=name))
    _raise_all(errors)
    wanted = [n for n in FIELDS if n in schema.names]
    _parquet_bounds(data, meta, wanted, file, max_rows, max_text_bytes)

    # Dictionary-encoded text stays a dictionary plus indices while it is read, so the decoded size can be counted
    # (value lengths taken by index) before any value is materialised: one 1 MB string repeated is 1 MB here.
    try:
        pf = pq.ParquetFile(pa.BufferReader(data), read_dictionary=textual_columns)
        text_bytes = 0
        parts = []
        for rg in range(meta.num_row_groups):
            part = pf.read_row_group(rg, columns=wanted)
            for name in part.column_names:
                for chunk in part.column(name).chunks:
                    if pa.types.is_dictionary(chunk.type):
                        lengths = pc.binary_length(chunk.dictionary)
                        size = pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0
                    elif name in textual_columns:
                        size = pc.sum(pc.binary_length(chunk)).as_py() or 0
                    else:  # a numeric answer: at most ~25 characters written out
                        size = 25 * len(chunk)
                    text_bytes += size
                    if text_bytes > max_text_bytes:
                        raise TooLarge(
                            file,
                            f"Parquet text decodes to more than {max_text_bytes:,} bytes (reached in column {name!r} "
                            f"of row group {rg}; a repeated dictionary value counts each time it is used): split the "
                            "file or shorten the text; nothing of it was used",
                        )
            parts.append(part)
        table = pa.concat_tables(parts)
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InvalidParquet(file, f"cannot read the Parquet data: {e}") from None
    columns = {n: table.column(n).to_pylist() for n in table.column_names}
    records: list[Record] = []
    for i in range(table.num_rows):
        row = i + 1
        values: dict[str, str | None] = {}
        row_errors: list[DataError] = []
        for name, col in columns.items():
            v = col[i]
            if v is None:
                if name != "image":
                    row_errors.append(MissingField(file, f"field {name!r} is null", line=row, field=name, unit="row"))
                values[name] = None
            elif isinstance(v, str):
                try:
                    values[name] = _check_text(v, file, name, row, "row")
                except DataError as e:
                    row_errors.append(e)
            else:
                values[name] = repr(v) if isinstance(v, float) else str(v)
        if row_errors:
            for e in row_errors:
                issues.add(e)
            if issues.full:
                break
            continue
        records.append(
            Record(row, Example(prompt=values["prompt"], answer=values["answer"], image=values.get("image")), "row")
        )  # type: ignore[arg-type]
    return records


# Parquet page headers (Thrift compact protocol): read here to bound what decoding will allocate, from the same headers
# the decoder obeys, instead of trusting the footer's totals.
_ENCODING_NAMES = {
    0: "PLAIN", 2: "PLAIN_DICTIONARY", 3: "RLE", 4: "BIT_PACKED", 5: "DELTA_BINARY_PACKED", 6: "DELTA_LENGTH_BYTE_ARRAY",
    7: "DELTA_BYTE_ARRAY", 8: "RLE_DICTIONARY", 9: "BYTE_STREAM_SPLIT",
}  # fmt: skip
_UNBOUNDED_ENCODINGS = {7}
"""DELTA_BYTE_ARRAY: each value is a prefix of the previous one plus a suffix, so a few bytes decode to any size."""


class _BadThrift(Exception):
    pass


class _Compact:
    """Just enough of Thrift's compact protocol to read a PageHeader (unknown fields are skipped)."""

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _BadThrift("page header runs past its column chunk")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        for _ in range(10):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise _BadThrift("malformed integer in page header")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise _BadThrift("page header field runs past its column chunk")
        self.pos += n

    def value(self, t: int, depth: int) -> object:
        if t in (1, 2):
            return t == 1
        if t == 3:
            return self.byte()
        if t in (4, 5, 6):
            return self.zigzag()
        if t == 7:
            return self.skip(8)
        if t == 8:
            return self.skip(self.varint())
        if t in (9, 10):
            head = self.byte()
            n, et = head >> 4, head & 0x0F
            if n == 15:
                n = self.varint()
            if n > self.end - self.pos:
                raise _BadThrift("page header list longer than its bytes")
            for _ in range(n):
                self.byte() if et in (1, 2) else self.value(et, depth + 1)
            return None
        if t == 11:
            n = self.varint()
            if n > self.end - self.pos:
                raise _BadThrift("page header map longer than its bytes")
            if n:
                kv = self.byte()
                for _ in range(n):
                    self.value(kv >> 4, depth + 1)
                    self.value(kv & 0x0F, depth + 1)
            return None
        if t == 12:
            return self.struct(depth + 1)
        raise _BadThrift(f"unknown field type {t} in page header")

    def struct(self, depth: int = 0) -> dict[int, object]:
        if depth > 16:
            raise _BadThrift("page header nested too deeply")
        fields: dict[int, object] = {}
        last = 0
        while True:
            b = self.byte()
            if b == 0:
                return fields
            delta, t = b >> 4, b & 0x0F
            fid = last + delta if delta else self.zigzag()
            last = fid
            fields[fid] = self.value(t, depth)


def _int(fields: dict[int, object], fid: int) -> int:
    v = fields.get(fid)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _BadThrift(f"page header field {fid} is missing or negative")
    return v


def _parquet_bounds(data: bytes, meta, columns: list[str], file: str, max_rows: int, max_text_bytes: int) -> None:
    """Refuse a Parquet file whose pages would decode past the limits, from the page headers alone.

    Every page of the columns read is walked: its header's uncompressed size is what the decoder allocates and
    decompresses into (a page that decompresses to more is an error there), and its value count is what it decodes.
    Dictionary-encoded values are counted exactly later (dictionary value lengths taken by index); DELTA_BYTE_ARRAY
    pages, whose values can be any size from a few bytes, are refused.
    """
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    decompressed = 0
    values: dict[str, int] = {}
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for ci in range(group.num_columns):
            col = group.column(ci)
            name = col.path_in_schema
            if name not in columns:
                continue
            where = f"column {name!r} of row group {rg}"
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset and col.dictionary_page_offset < start:
                start = col.dictionary_page_offset
            end = start + col.total_compressed_size
            if start < 4 or end > footer_start or col.total_compressed_size < 0:
                raise InvalidParquet(file, f"{where} lies outside the file's data (bytes {start}..{end}): corrupt file")
            pos = start
            try:
                while pos < end:
                    reader = _Compact(data, pos, end)
                    header = reader.struct()
                    kind, size, stored = _int(header, 1), _int(header, 2), _int(header, 3)
                    pos = reader.pos + stored
                    if pos > end:
                        raise _BadThrift("page runs past its column chunk")
                    decompressed += size
                    sub = header.get({0: 5, 2: 7, 3: 8}.get(kind, -1))
                    if kind in (0, 3):
                        if not isinstance(sub, dict):
                            raise _BadThrift("data page without its data page header")
                        encoding = _int(sub, 2 if kind == 0 else 4)
                        values[name] = values.get(name, 0) + _int(sub, 1)
                        if encoding in _UNBOUNDED_ENCODINGS:
                            raise InvalidParquet(
                                file,
                                f"{where} uses the {_ENCODING_NAMES[encoding]} encoding, whose decoded size can't be "
                                "bounded before decoding: write the file with the default encodings (dictionary or "
                                "plain, as pyarrow, pandas and Spark do by default); nothing of it was used",
                            )
            except _BadThrift as e:
                raise InvalidParquet(file, f"cannot read the page headers of {where}: {e}: corrupt file") from None
            if decompressed > max_text_bytes:
                raise TooLarge(
                    file,
                    f"Parquet pages decompress to more than {max_text_bytes:,} bytes (reached at {where}, by its page "
                    "headers): split the file; nothing of it was used",
                )
            if values.get(name, 0) > max_rows:
                raise TooLarge(
                    file,
                    f"{where}: pages hold {values[name]:,} values, over the limit of {max_rows:,} examples per file: "
                    "split it; nothing of it was used",
                )
