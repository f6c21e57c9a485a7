"""Validating a batch of examples against its task, with a Great Expectations (GX Core 1.x) expectation suite.

The suite is built from the :class:`TaskSpec` (:func:`build_suite`) and run on a pandas DataFrame of the batch, one
row per example with the columns ``prompt``, ``answer``, ``image``, ``key`` (the first 16 hex digits of the example's
hash, see :func:`skillgraft.data.split.example_key`) and ``split`` (the side the example will land on). Every
expectation carries ``meta.rule``, the name reported in :class:`RuleResult`:

    required_columns  prompt and answer exist            not_null     no nulls
    not_empty         at least one non-space character   max_length   prompt/answer within the spec's limits
    label_set         answer is one of the labels        number_format  answer is a decimal number
    min_rows          at least ``min_rows`` examples     duplicates   no prompt twice (unless allow_duplicates)
    leakage           no prompt already held out in an earlier batch (GX ExpectColumnValuesToNotBeInSet on key)

One rule is checked here, outside GX, and recorded in the same report: ``split_overlap`` (a prompt on both sides of
this batch, or an eval prompt that an earlier batch trained on). Problems that stop a file from being read at all
become a report with rule ``parse`` (see :func:`parse_failure_report`); no GX run happens then.

``great_expectations`` is imported on first use, so ``import skillgraft.data`` stays fast.
"""

from __future__ import annotations

import html
import os
import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from skillgraft import layout
from skillgraft.data.io import DataError, Record, read_records
from skillgraft.data.keyindex import KEY_HEX, KeyIndex, key_text, key_values, restrict
from skillgraft.data.spec import TaskSpec
from skillgraft.data.split import Side, assign_sides, example_key, settle_sides

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite

PARTIAL_ROWS = 20
"""Failing rows listed per rule (GX ``partial_unexpected_count``); the rest are counted."""
NUMBER_REGEX = r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\Z"

# Rule names, in the order problems are reported.
RULES = (
    "parse",
    "image",
    "unsafe_file",
    "task_name",
    "unknown_task",
    "required_columns",
    "min_rows",
    "not_null",
    "not_empty",
    "max_length",
    "label_set",
    "number_format",
    "duplicates",
    "leakage",
    "split_overlap",
    "internal_error",
)


class RuleResult(BaseModel):
    """One rule checked on one column (or the whole batch): ``observed`` is the failing count or observed value."""

    rule: str
    column: str | None = None
    success: bool
    observed: int | float | str | None = None
    detail: str = ""


class ChunkResult(BaseModel):
    """One chunk of a file validated in chunks: its lines and whether its GX run passed."""

    first_line: int
    last_line: int
    rows: int
    success: bool


class ValidationReport(BaseModel):
    """Everything known about one file's validation; written as ``report.json`` next to the data it describes."""

    success: bool
    file: str
    batch_id: str
    task: str | None = None
    rows: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    results: list[RuleResult] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="human lines: 'data.jsonl:17: field ...'")
    issue_count: int = Field(0, description="every problem found; `problems` lists the first of them")
    gx_results: dict[str, Any] = Field(default_factory=dict, description="the GX validation result, as JSON")
    chunks: list[ChunkResult] = Field(
        default_factory=list, description="a file validated in chunks: each chunk's lines and GX outcome"
    )
    gx_chunk: int | None = Field(None, description="a file validated in chunks: the chunk gx_results is of (from 1)")

    def failed_rules(self) -> list[str]:
        return sorted({r.rule for r in self.results if not r.success}, key=_rule_order)

    def headline(self) -> str:
        """The first problem and how many more: ``data.jsonl:17: field 'answer' is empty (and 3 more issues)``."""
        if not self.problems:
            return f"{self.file}: all checks passed"
        extra = self.issue_count - 1
        return self.problems[0] + (f" (and {extra} more issue{'s' * (extra > 1)})" if extra > 0 else "")

    def to_html(self) -> str:
        """A standalone HTML page: GX's own Data Docs validation page (rendered offline from ``gx_results`` by GX's
        ``ValidationResultsPageRenderer`` + ``DefaultJinjaPageView``, the same pair its site builder uses), with a
        summary of every rule and problem inserted at the top. Without a GX run (parse errors), the summary alone.
        The Data Docs page loads its stylesheets from public CDNs; offline it is plain but complete.
        """
        summary = self._summary_html()
        if not self.gx_results:
            head = f"<head><meta charset='utf-8'><title>{html.escape(self.file)}</title></head>"
            return f"<!DOCTYPE html><html>{head}<body>{summary}</body></html>"
        try:
            page = _gx_data_docs_page(self.gx_results)  # every string from the data is escaped there
        except Exception as e:  # noqa: BLE001 - a renderer bug must not hide the report; the failure is shown in it
            note = f"<p><b>GX Data Docs could not be rendered:</b> {html.escape(repr(e))}</p>"
            return f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{summary}{note}</body></html>"
        start = page.find("<body")
        cut = page.find(">", start) + 1 if start >= 0 else 0
        return page[:cut] + f"<div class='container-fluid' style='padding:1em'>{summary}</div>" + page[cut:]

    def _summary_html(self) -> str:
        esc = html.escape
        status = "PASSED" if self.success else "REJECTED"
        rows = "".join(
            f"<tr><td>{esc(r.rule)}</td><td>{esc(r.column or '')}</td><td>{'ok' if r.success else 'FAILED'}</td>"
            f"<td>{esc(str(r.observed) if r.observed is not None else '')}</td><td>{esc(r.detail)}</td></tr>"
            for r in self.results
        )
        problems = "".join(f"<li><code>{esc(p)}</code></li>" for p in self.problems)
        more = self.issue_count - len(self.problems)
        return (
            f"<h2>skillgraft validation: {esc(self.file)} — {status}</h2>"
            f"<p>task <b>{esc(self.task or '?')}</b>, batch <code>{esc(self.batch_id)}</code>, {self.rows} rows "
            f"({self.train_rows} train, {self.eval_rows} eval)</p>"
            + (
                f"<p>validated in {len(self.chunks)} chunks; the GX Data Docs below are of chunk {self.gx_chunk} "
                f"(lines {self.chunks[(self.gx_chunk or 1) - 1].first_line}-"
                f"{self.chunks[(self.gx_chunk or 1) - 1].last_line})</p>"
                if self.chunks
                else ""
            )
            + "<table class='table table-sm' border='1' cellpadding='4'><tr><th>rule</th><th>column</th><th>result</th>"
            f"<th>observed</th><th>detail</th></tr>{rows}</table>"
            + (f"<h3>Problems ({self.issue_count})</h3><ul>{problems}</ul>" if problems else "")
            + (f"<p>... and {more} more not listed</p>" if more > 0 else "")
        )


def _rule_order(rule: str) -> int:
    return RULES.index(rule) if rule in RULES else len(RULES)


# --- reports without a GX run -------------------------------------------------------------------------------------


def parse_failure_report(err: DataError, *, batch_id: str, task: str | None = None) -> ValidationReport:
    """A failed report for a file that could not be read: one ``parse`` result per problem (``observed`` = its code)."""
    errors = err.all_errors()
    problems = [e.problem for e in errors]
    if err.uncounted:
        problems.append(f"{err.file}: {err.uncounted} more problems not listed (reading stopped)")
    return ValidationReport(
        success=False,
        file=err.file,
        batch_id=batch_id,
        task=task,
        results=[  # image problems are their own rule; anything else stopped the file being read at all
            RuleResult(
                rule="image" if e.code == "image" else "parse",
                column=e.field,
                success=False,
                observed=e.code,
                detail=e.problem,
            )  # fmt: skip
            for e in errors
        ],
        problems=problems,
        issue_count=err.issue_count,
    )


def rejection_report(rule: str, message: str, *, file: str, batch_id: str, task: str | None = None) -> ValidationReport:
    """A failed report for a file rejected before its content is looked at (``unknown_task``, ``task_name``)."""
    return ValidationReport(
        success=False,
        file=file,
        batch_id=batch_id,
        task=task,
        results=[RuleResult(rule=rule, success=False, detail=message)],
        problems=[f"{file}: {message}"],
        issue_count=1,
    )


# --- the GX suite -------------------------------------------------------------------------------------------------


def build_suite(spec: TaskSpec, existing_eval_keys: Collection[str] = ()) -> ExpectationSuite:
    """The GX expectation suite for a batch of ``spec``'s task; ``existing_eval_keys`` are the keys (16 hex digits)
    of the prompts already held out for evaluation in earlier batches."""
    import great_expectations as gx

    E = gx.expectations
    expectations: list[Any] = []

    def add(rule: str, expectation: Any, notes: str) -> None:
        expectation.meta = {"rule": rule}
        expectation.notes = notes
        expectations.append(expectation)

    for col in ("prompt", "answer"):
        add("required_columns", E.ExpectColumnToExist(column=col), f"every example has a `{col}`")
    add(
        "min_rows",
        E.ExpectTableRowCountToBeBetween(min_value=spec.min_rows),
        f"a batch has at least {spec.min_rows} examples (min_rows)",
    )
    for col in ("prompt", "answer"):
        add("not_null", E.ExpectColumnValuesToNotBeNull(column=col), f"`{col}` is never null")
        add(
            "not_empty",
            E.ExpectColumnValuesToMatchRegex(column=col, regex=r"\S"),
            f"`{col}` has at least one non-whitespace character",
        )
    add(
        "max_length",
        E.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=0, max_value=spec.max_prompt_chars),
        f"prompts are at most {spec.max_prompt_chars} characters (max_prompt_chars)",
    )
    add(
        "max_length",
        E.ExpectColumnValueLengthsToBeBetween(column="answer", min_value=0, max_value=spec.max_answer_chars),
        f"answers are at most {spec.max_answer_chars} characters (max_answer_chars)",
    )
    if spec.answer_type == "label":
        add(
            "label_set",
            E.ExpectColumnValuesToBeInSet(column="answer", value_set=list(spec.labels or [])),
            f"answers are one of the labels {spec.labels}",
        )
    elif spec.answer_type == "number":
        add(
            "number_format",
            E.ExpectColumnValuesToMatchRegex(column="answer", regex=NUMBER_REGEX),
            "answers are decimal numbers such as 42, -3.5 or 1e3",
        )
    if not spec.allow_duplicates:
        add(
            "duplicates",
            E.ExpectColumnValuesToBeUnique(column="key"),
            "no prompt appears twice in a batch (key = hash of prompt and image)",
        )
    add(
        "leakage",
        E.ExpectColumnValuesToNotBeInSet(column="key", value_set=sorted(existing_eval_keys)),
        "no prompt is already held out for evaluation in an earlier batch of the task",
    )
    # Passed to the constructor: ExpectationSuite.add_expectation would need a current GX context.
    return gx.ExpectationSuite(name=f"skillgraft.{spec.name}", expectations=expectations)


def _gx_config() -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    return DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )


def run_suite(df: pd.DataFrame, suite: ExpectationSuite, *, asset: str = "examples") -> dict[str, Any]:
    """Validate ``df`` with ``suite`` in a fresh in-memory GX context; the GX result as a JSON dict."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral", project_config=_gx_config())
    batch = (
        context.data_sources.add_pandas("skillgraft")
        .add_dataframe_asset(asset)
        .add_batch_definition_whole_dataframe("batch")
        .get_batch(batch_parameters={"dataframe": df})
    )
    result = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_ROWS})
    out = result.to_json_dict()
    # The load time is the only part that changes between runs: without it a report depends only on file and task.
    out.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
    return out


_HTML_SPECIAL = re.compile(r"[&<>\"'`]")


def _gx_data_docs_page(gx_results: dict[str, Any]) -> str:
    """GX's Data Docs page for ``gx_results``, with every string that could carry markup escaped exactly once.

    GX escapes some values (a label set) but not others (the table of unexpected values), so escaping its input would
    double-escape and escaping its output can't tell data from markup. Instead each string holding ``& < > " ' ```
    is swapped for an inert token (letters and digits, the same escaped or not) before rendering, and each token in
    the page is replaced by the escaped string after: values, labels, notes and file names alike.
    """
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    nonce = secrets.token_hex(8)
    originals: dict[str, str] = {}
    tokens: dict[str, str] = {}

    def token(value: str) -> str:
        if not _HTML_SPECIAL.search(value):
            return value
        if value not in tokens:
            tokens[value] = t = f"sgx{nonce}n{len(tokens)}e"
            originals[t] = value
        return tokens[value]

    def inert(obj: Any) -> Any:
        if isinstance(obj, str):
            return token(obj)
        if isinstance(obj, dict):
            return {inert(k) if isinstance(k, str) else k: inert(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [inert(v) for v in obj]
        return obj

    result = ExpectationSuiteValidationResultSchema().load(inert(gx_results))
    page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    if not originals:
        return page
    return re.sub(rf"sgx{nonce}n(\d+)e", lambda m: html.escape(originals[m.group(0)], quote=True), page)


# --- validating a batch -------------------------------------------------------------------------------------------


def examples_frame(records: Sequence[Record], sides: Sequence[Side]) -> pd.DataFrame:
    """The DataFrame the suite runs on: one row per example, index = position in ``records``."""
    import pandas as pd

    return pd.DataFrame(
        {
            "prompt": [r.example.prompt for r in records],
            "answer": [r.example.answer for r in records],
            "image": [r.example.image for r in records],
            "key": [example_key(r.example)[:KEY_HEX] for r in records],
            "split": list(sides),
        },
        dtype=object,
    )


def validate_records(
    records: Sequence[Record],
    sides: Sequence[Side],
    spec: TaskSpec,
    *,
    file: str,
    batch_id: str,
    existing_eval: Mapping[str, str] | Collection[str] = (),
    existing_train: Mapping[str, str] | Collection[str] = (),
) -> ValidationReport:
    """Run the task's suite (and the split check) on parsed records and their sides.

    ``existing_eval`` / ``existing_train``: keys (16 hex digits, see :data:`KEY_HEX`) of the prompts in the eval / train
    splits of the task's earlier batches, or a mapping key -> batch id to name the batch in messages.
    """
    sides = list(sides)
    df = examples_frame(records, sides)
    keys = df["key"].tolist()  # only what this batch can collide with goes into the suite and the messages
    existing_eval, existing_train = restrict(existing_eval, keys), restrict(existing_train, keys)
    gx_results = run_suite(df, build_suite(spec, existing_eval), asset=file)
    found = _Problems(file, records, df)
    results: list[RuleResult] = []
    for r in gx_results["results"]:
        results.append(found.from_gx(r, spec, existing_eval))
    results.append(found.split_overlap(existing_train))
    results.sort(key=lambda r: _rule_order(r.rule))
    return ValidationReport(
        success=all(r.success for r in results),
        file=file,
        batch_id=batch_id,
        task=spec.name,
        rows=len(records),
        train_rows=sides.count("train"),
        eval_rows=sides.count("eval"),
        results=results,
        problems=found.lines(),
        issue_count=found.count,
        gx_results=gx_results,
    )


def validate_file(
    source: bytes | str | os.PathLike[str],
    spec: TaskSpec,
    *,
    name: str | None = None,
    existing_eval: Mapping[str, str] | Collection[str] = (),
    existing_train: Mapping[str, str] | Collection[str] = (),
) -> ValidationReport:
    """Read, split and validate one file for ``spec``'s task; a :class:`DataError` becomes the report, never raised."""
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
    name = name or Path(str(source)).name
    batch_id = layout.batch_id(data)
    try:
        records = read_records(data, name, answer_type=spec.answer_type)
    except DataError as e:
        return parse_failure_report(e, batch_id=batch_id, task=spec.name)
    sides = assign_sides([r.example for r in records], spec.eval_fraction)
    return validate_records(
        records, sides, spec, file=name, batch_id=batch_id, existing_eval=existing_eval, existing_train=existing_train
    )


class _Problems:
    """Turns failing rows into human lines (``file:line: field 'answer' is empty``), counting every issue."""

    def __init__(self, file: str, records: Sequence[Record], df: pd.DataFrame) -> None:
        self.file = file
        self.records = records
        self.df = df
        self.table: list[tuple[int, str]] = []  # (rule order, line) for whole-batch problems
        self.rows: list[tuple[int, int, str]] = []  # (row index, rule order, line)
        self.notes: list[str] = []  # "... N more rows" lines
        self.count = 0

    def lines(self) -> list[str]:
        return [t for _, t in sorted(self.table)] + [t for *_, t in sorted(self.rows)] + self.notes

    def _at(self, i: int) -> str:
        return self.records[i].location(self.file)

    def _line(self, i: int) -> int:
        return self.records[i].line

    def from_gx(
        self, r: dict[str, Any], spec: TaskSpec, existing_eval: Mapping[str, str] | Collection[str]
    ) -> RuleResult:
        cfg = r["expectation_config"]
        rule = (cfg.get("meta") or {}).get("rule", cfg["type"])
        column = cfg["kwargs"].get("column")
        res = r.get("result") or {}
        order = _rule_order(rule)
        if error := _raised(r.get("exception_info") or {}):
            self.table.append((order, f"{self.file}: rule {rule!r} could not be checked on {column!r}: {error}"))
            self.count += 1
            return RuleResult(rule=rule, column=column, success=False, detail=f"{cfg['type']} raised: {error}")
        if rule in ("required_columns", "min_rows"):
            observed = res.get("observed_value")
            if not r["success"]:
                self.count += 1
                if rule == "required_columns":
                    message = f"column {column!r} is missing"
                else:
                    message = (
                        f"has {observed} examples; task {spec.name!r} needs at least {spec.min_rows} (min_rows): "
                        "add examples or merge files"
                    )
                self.table.append((order, f"{self.file}: {message}"))
            return RuleResult(rule=rule, column=column, success=r["success"], observed=observed, detail=cfg["type"])
        unexpected = int(res.get("unexpected_count") or 0)
        indices = [i for i in res.get("partial_unexpected_index_list") or [] if isinstance(i, int)]
        listed = 0
        for i in indices:
            message = self._row_message(rule, column, i, spec, existing_eval)
            if message is not None:
                self.rows.append((i, order, f"{self._at(i)}: {message}"))
                listed += 1
        issues = unexpected
        if rule == "duplicates":  # GX flags every copy; the first occurrence is the original, not an issue
            issues = int(self.df["key"].duplicated().sum())
        self.count += issues
        if issues > listed:
            self.notes.append(f"{self.file}: {issues - listed} more rows break rule {rule!r} on {column!r}")
        detail = f"{cfg['type']}: {unexpected} of {len(self.df)} rows unexpected" if unexpected else cfg["type"]
        return RuleResult(rule=rule, column=column, success=r["success"], observed=unexpected, detail=detail)

    def _row_message(
        self, rule: str, column: str, i: int, spec: TaskSpec, existing_eval: Mapping[str, str] | Collection[str]
    ) -> str | None:
        value = self.df.at[i, column]
        if rule == "not_null":
            return f"field {column!r} is null"
        if rule == "not_empty":
            return f"field {column!r} is empty" + (" (only whitespace)" if value else "")
        if rule == "max_length":
            limit = "max_prompt_chars" if column == "prompt" else "max_answer_chars"
            return (
                f"field {column!r} is {len(value)} characters, over the task's {limit}={getattr(spec, limit)}: "
                "shorten it"
            )
        if rule == "label_set":
            return f"field 'answer' is {_short(value)}, not one of the task's labels {spec.labels}"
        if rule == "number_format":
            return (
                f"field 'answer' is {_short(value)}, not a number: write e.g. 42, -3.5 or 1e3 (no units, spaces "
                "or thousands separators)"
            )
        if rule == "duplicates":
            key = self.df.at[i, "key"]
            first = int(self.df.index[self.df["key"] == key][0])
            if first == i:
                return None
            if self.df.at[first, "answer"] == self.df.at[i, "answer"]:
                return f"duplicate of line {self._line(first)} (same prompt and answer): remove one copy"
            return (
                f"same prompt as line {self._line(first)} but a different answer ({_short(self.df.at[first, 'answer'])}"
                f" vs {_short(self.df.at[i, 'answer'])}): keep one"
            )
        if rule == "leakage":
            batch = existing_eval.get(value) if isinstance(existing_eval, Mapping) else None
            where = f"batch {batch}" if batch else "an earlier batch"
            where += "" if batch and " of guard " in batch else f" of task {spec.name!r}"
            return (
                f"prompt is already held out for evaluation in {where}: remove it "
                "(training on it would leak the eval set)"
            )
        return f"field {column!r} breaks rule {rule!r}"

    def split_overlap(self, existing_train: Mapping[str, str] | Collection[str]) -> RuleResult:
        """Own check: no key on both sides of this batch; no eval key that an earlier batch trained on."""
        keys, sides = self.df["key"].tolist(), self.df["split"].tolist()
        train_keys = {k for k, s in zip(keys, sides) if s == "train"}
        failing = 0
        for i, (k, s) in enumerate(zip(keys, sides)):
            if s != "eval":
                continue
            if k in train_keys:
                message = "prompt is in both the train and the eval part of this batch"
            elif k in existing_train:
                batch = existing_train.get(k) if isinstance(existing_train, Mapping) else None
                where = f"batch {batch}" if batch else "an earlier batch"
                message = f"prompt falls in the eval part but was trained on in {where}: remove it"
            else:
                continue
            failing += 1
            if failing <= PARTIAL_ROWS:
                self.rows.append((i, _rule_order("split_overlap"), f"{self._at(i)}: {message}"))
        self.count += failing
        if failing > PARTIAL_ROWS:
            self.notes.append(f"{self.file}: {failing - PARTIAL_ROWS} more rows break rule 'split_overlap'")
        return RuleResult(
            rule="split_overlap",
            column="prompt",
            success=failing == 0,
            observed=failing,
            detail="own check (not GX): eval prompts must not be trained on, in this batch or an earlier one",
        )


def _raised(info: dict[str, Any]) -> str | None:
    """The exception message when GX could not evaluate an expectation (its exception_info has two shapes)."""
    if "raised_exception" in info:
        return (info.get("exception_message") or "error") if info["raised_exception"] else None
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return v.get("exception_message") or "error"
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


# --- a file validated chunk by chunk ------------------------------------------------------------------------------

MAX_PROBLEM_LINES = 200
"""Problem lines a report of a file validated in chunks lists; the rest are counted."""
_FILE_RULES = ("min_rows", "duplicates", "split_overlap")
"""Rules checked over the whole file (on the key index of its rows), not per chunk."""


def chunk_spec(spec: TaskSpec) -> TaskSpec:
    """The spec a chunk's GX suite is built from: the rules that span the file (:data:`_FILE_RULES`) are left out
    (``min_rows`` 0, duplicates allowed) and checked by :class:`FileChecks` over every row."""
    return spec.model_copy(update={"min_rows": 0, "allow_duplicates": True})


class FileChecks:
    """The report of a file too large to validate at once, merged from its chunks' reports.

    Each chunk runs the task's GX suite without the file-wide rules (:func:`chunk_spec`) and with the leakage set cut
    down to its own keys; :meth:`add` keeps 8-byte keys, line numbers and answer hashes of its rows (about 25 bytes a
    row) and :meth:`finish` checks ``min_rows``, ``duplicates`` and ``split_overlap`` over all of them, and settles the
    sides (the tiny-batch rule of :func:`~skillgraft.data.split.assign_sides`, over the whole file).
    """

    def __init__(
        self, spec: TaskSpec, *, file: str, batch_id: str, existing_train: Mapping[str, str] | Collection[str]
    ):
        self.spec, self.file, self.batch_id, self.existing_train = spec, file, batch_id, existing_train
        self.reports: list[ValidationReport] = []
        self.chunks: list[ChunkResult] = []
        self._keys: list[Any] = []
        self._lines: list[Any] = []
        self._answers: list[Any] = []
        self._eval: list[Any] = []
        self._unit = "line"

    def _at(self, line: Any) -> str:
        return f"{self.file}:{int(line)}" if self._unit == "line" else f"{self.file}: row {int(line)}"

    def add(
        self, records: Sequence[Record], keys: Sequence[str], sides: Sequence[Side], report: ValidationReport
    ) -> None:
        """One chunk: its records, their keys (:data:`KEY_HEX` digits), the sides they were written to, its report."""
        import numpy as np

        self.reports.append(report)
        self._unit = records[0].unit
        self.chunks.append(ChunkResult(first_line=records[0].line, last_line=records[-1].line, rows=len(records),
                                       success=report.success))  # fmt: skip
        self._keys.append(key_values(keys))
        self._lines.append(np.fromiter((r.line for r in records), dtype=np.int64, count=len(records)))
        self._answers.append(np.fromiter((hash(r.example.answer) for r in records), dtype=np.int64, count=len(records)))
        self._eval.append(np.fromiter((s == "eval" for s in sides), dtype=bool, count=len(sides)))

    def finish(self) -> tuple[ValidationReport, Any, Any, Any]:
        """The file's report, its rows' keys (uint64), their final sides and the sides :meth:`add` was given (True:
        eval), in file order."""
        import numpy as np

        keys, lines = np.concatenate(self._keys), np.concatenate(self._lines)
        answers, given = np.concatenate(self._answers), np.concatenate(self._eval)
        is_eval = given if self.spec.role == "guard" else settle_sides(keys >> np.uint64(32), given)
        merged: dict[tuple[str, str | None], RuleResult] = {}
        for report in self.reports:
            for r in report.results:
                if r.rule in _FILE_RULES:
                    continue
                seen = merged.get((r.rule, r.column))
                if seen is None:
                    merged[(r.rule, r.column)] = r.model_copy()
                    continue
                seen.success = seen.success and r.success
                if isinstance(seen.observed, int) and isinstance(r.observed, int):
                    seen.observed += r.observed
                if not r.success and seen.detail != r.detail:
                    seen.detail = r.detail
        total = len(keys)
        for r in merged.values():
            if isinstance(r.observed, int) and r.observed and r.rule != "required_columns":
                r.detail = f"{r.detail.split(':')[0]}: {r.observed} of {total} rows unexpected (over {len(self.reports)} chunks)"
        size, size_lines, size_issues = self._min_rows(total)  # a whole-file problem: its line goes first
        problems = size_lines + [p for report in self.reports for p in report.problems]
        issue_count = size_issues + sum(report.issue_count for report in self.reports)
        results = [*merged.values(), size]
        rows = [self._duplicates(keys, lines, answers)] if not self.spec.allow_duplicates else []
        for result, found, count in [*rows, self._split_overlap(keys, lines, is_eval)]:
            results.append(result)
            problems += found
            issue_count += count
        if len(problems) > MAX_PROBLEM_LINES:
            problems = problems[:MAX_PROBLEM_LINES] + [
                f"{self.file}: {len(problems) - MAX_PROBLEM_LINES} more problem lines not listed"
            ]
        results.sort(key=lambda r: _rule_order(r.rule))
        shown = next((rep for rep in self.reports if not rep.success), self.reports[0])
        report = ValidationReport(
            success=all(r.success for r in results),
            file=self.file,
            batch_id=self.batch_id,
            task=self.spec.name,
            rows=total,
            train_rows=int((~is_eval).sum()),
            eval_rows=int(is_eval.sum()),
            results=results,
            problems=problems,
            issue_count=issue_count,
            gx_results=shown.gx_results,
            chunks=self.chunks,
            gx_chunk=self.reports.index(shown) + 1,
        )
        return report, keys, is_eval, given

    def _min_rows(self, total: int) -> tuple[RuleResult, list[str], int]:
        ok = total >= self.spec.min_rows
        line = (f"{self.file}: has {total} examples; task {self.spec.name!r} needs at least {self.spec.min_rows} "
                "(min_rows): add examples or merge files")  # fmt: skip
        result = RuleResult(rule="min_rows", success=ok, observed=total,
                            detail="row count of the whole file (counted over its chunks)")  # fmt: skip
        return result, [] if ok else [line], 0 if ok else 1

    def _duplicates(self, keys: Any, lines: Any, answers: Any) -> tuple[RuleResult, list[str], int]:
        import numpy as np

        order = np.argsort(keys, kind="stable")  # copies of a key are adjacent, in file order
        sorted_keys = keys[order]
        again = np.zeros(len(keys), dtype=bool)
        again[1:] = sorted_keys[1:] == sorted_keys[:-1]
        first_of = order[np.maximum.accumulate(np.where(~again, np.arange(len(keys)), 0))]
        dupes = np.sort(order[again])  # rows repeating an earlier row, in file order
        first = {int(row): int(f) for row, f in zip(order[again], first_of[again])}
        out = []
        for row in dupes[:PARTIAL_ROWS]:
            f = first[int(row)]
            if answers[f] == answers[row]:
                out.append(f"{self._at(lines[row])}: duplicate of line {lines[f]} (same prompt and answer): "
                           "remove one copy")  # fmt: skip
            else:
                out.append(f"{self._at(lines[row])}: same prompt as line {lines[f]} but a different answer: keep one")
        if len(dupes) > PARTIAL_ROWS:
            out.append(f"{self.file}: {len(dupes) - PARTIAL_ROWS} more rows break rule 'duplicates' on 'key'")
        result = RuleResult(rule="duplicates", column="key", success=not len(dupes), observed=int(len(dupes)),
                            detail="own check over the whole file (key index): no prompt appears twice")  # fmt: skip
        return result, out, int(len(dupes))

    def _split_overlap(self, keys: Any, lines: Any, is_eval: Any) -> tuple[RuleResult, list[str], int]:
        import numpy as np

        both = is_eval & np.isin(keys, keys[~is_eval])
        if isinstance(self.existing_train, KeyIndex):
            earlier = is_eval & self.existing_train.found(keys)
        else:
            pool = set(self.existing_train)
            earlier = is_eval & np.fromiter((key_text(k) in pool for k in keys), dtype=bool, count=len(keys))
        failing = np.flatnonzero(both | earlier)
        out = []
        for row in failing[:PARTIAL_ROWS]:
            if both[row]:
                message = "prompt is in both the train and the eval part of this batch"
            else:
                k = key_text(keys[row])
                batch = self.existing_train.get(k) if isinstance(self.existing_train, Mapping) else None
                message = f"prompt falls in the eval part but was trained on in {f'batch {batch}' if batch else 'an earlier batch'}: remove it"
            out.append(f"{self._at(lines[row])}: {message}")
        if len(failing) > PARTIAL_ROWS:
            out.append(f"{self.file}: {len(failing) - PARTIAL_ROWS} more rows break rule 'split_overlap'")
        result = RuleResult(
            rule="split_overlap",
            column="prompt",
            success=not len(failing),
            observed=int(len(failing)),
            detail="own check (not GX): eval prompts must not be trained on, in this batch or an earlier one",
        )
        return result, out, int(len(failing))
