"""The store layout (skillgraft/layout.py): its keys and names, and that no other module spells a key itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from skillgraft import layout
from skillgraft.names import InvalidName

ROOT = Path(__file__).resolve().parents[1]

# --- keys ------------------------------------------------------------------------------------------------------------


def test_model_keys() -> None:
    assert layout.model_info_key("demo") == "models/demo/model.json"
    assert layout.base_prefix("demo") == "models/demo/base/"
    assert layout.base_file_key("demo", "config.json") == "models/demo/base/config.json"
    assert layout.versions_prefix("demo") == "models/demo/versions/"
    assert layout.version_prefix("demo", "v3") == "models/demo/versions/v3/"
    assert layout.version_file_key("demo", "v3", layout.MANIFEST) == "models/demo/versions/v3/manifest.json"
    assert layout.version_file_key("demo", "v3", layout.CLAIM) == "models/demo/versions/v3/claim.json"
    assert layout.version_file_key("demo", "v3", layout.DELTA) == "models/demo/versions/v3/delta.safetensors"
    assert layout.version_file_key("demo", "v3", layout.METRICS) == "models/demo/versions/v3/metrics.json"
    assert layout.version_file_key("demo", "v3", layout.DECISION) == "models/demo/versions/v3/decision.json"
    assert layout.version_file_key("demo", "v3", layout.CARD) == "models/demo/versions/v3/card.md"
    adapter = [layout.version_file_key("demo", "v3", name) for name in layout.ADAPTER_FILES]
    assert adapter == [
        "models/demo/versions/v3/adapter_config.json",
        "models/demo/versions/v3/adapter_model.safetensors",
    ]
    assert all(layout.is_file_name(name) for name in layout.ADAPTER_FILES)
    assert layout.champion_key("demo") == "models/demo/champion.json"
    assert layout.history_key("demo") == "models/demo/history.jsonl"
    assert layout.guards_key("demo") == "models/demo/guards.json"
    prompts = layout.guard_prompts_key("demo", "calm", "ab" * 32)
    base = layout.guard_base_score_key("demo", "calm", "cd" * 32)
    assert prompts == "models/demo/guards/calm/prompts-abababababababab.jsonl"
    assert base == "models/demo/guards/calm/base-cdcdcdcdcdcdcdcd.json"
    assert layout.version_url("s3://bucket/pre/", "demo", "v2") == "s3://bucket/pre/models/demo/versions/v2/"
    assert layout.version_url("/srv/store", "demo", "v2") == "/srv/store/models/demo/versions/v2/"


def test_task_and_batch_keys() -> None:
    batch = "0123456789abcdef"
    assert layout.task_spec_key("count") == "tasks/count/task.json"
    assert layout.task_of_spec_key("tasks/count/task.json") == "count"
    for key in ("tasks/count/batches/x/task.json", "tasks//task.json", "tasks/count/task.jsonl", "models/x/task.json"):
        assert layout.task_of_spec_key(key) is None
    assert layout.batches_prefix("count") == "tasks/count/batches/"
    assert layout.batch_prefix("count", batch) == f"tasks/count/batches/{batch}/"
    assert layout.batch_manifest_key("count", batch) == f"tasks/count/batches/{batch}/batch.json"
    assert layout.is_batch_manifest_key("count", f"tasks/count/batches/{batch}/batch.json")
    assert not layout.is_batch_manifest_key("count", f"tasks/count/batches/{batch}/train.jsonl")
    assert not layout.is_batch_manifest_key("count", f"tasks/count/batches/{batch}/sub/batch.json")
    assert not layout.is_batch_manifest_key("count", "tasks/count/batches/XYZ/batch.json")
    assert not layout.is_batch_manifest_key("count", f"tasks/counter/batches/{batch}/batch.json")
    assert layout.split_key("count", batch, "eval") == f"tasks/count/batches/{batch}/eval.jsonl"
    assert layout.split_file("train") == "train.jsonl"
    assert layout.source_file("a.jsonl") == "source/a.jsonl"
    assert layout.report_file("json") == "report.json" and layout.report_file("html", 2) == "report.2.html"
    ref = layout.image_content_ref("e" * 64, ".png")
    assert ref == "images/" + "e" * 64 + ".png" and layout.content_ref_hash(ref) == "e" * 64
    assert layout.task_image_key("count", ref) == f"tasks/count/{ref}"
    for not_ref in ("images/" + "e" * 63 + ".png", "images/" + "E" * 64 + ".png", "imgs/" + "e" * 64 + ".png",
                    "images/" + "e" * 64 + ".jpeg", "x/images/" + "e" * 64 + ".png"):  # fmt: skip
        assert layout.content_ref_hash(not_ref) is None


def test_landing_quarantine_and_announced_keys() -> None:
    assert layout.landing_prefix() == "incoming/"
    assert layout.landing_prefix("count") == "incoming/count/"
    assert layout.landed_key("count", "a.jsonl") == "incoming/count/a.jsonl"
    assert layout.landing_task("incoming/count/a.jsonl") == "count"
    assert layout.landing_task("incoming/count/sub/a.jsonl") == "count"
    assert layout.landing_task("incoming/a.jsonl") is None  # not in a task folder
    assert layout.landing_task("incoming/Bad Name/a.jsonl") is None  # not a valid task name
    assert layout.landing_task("tasks/count/a.jsonl") is None
    assert layout.landing_folder("incoming/Bad Name/a.png") == "Bad Name"
    assert layout.quarantine_prefix("count", "0123456789abcdef") == "quarantine/count/0123456789abcdef/"
    assert layout.quarantine_prefix(None, "0123456789abcdef") == "quarantine/_invalid/0123456789abcdef/"
    assert layout.announced_key("demo", "incoming/count/a.jsonl", "ab12") == "announced/demo/count/a.jsonl@ab12.json"
    with pytest.raises(ValueError, match="not in the landing zone"):
        layout.announced_key("demo", "tasks/count/a.jsonl", "ab12")


def test_batch_id_is_the_sha256_prefix() -> None:
    import hashlib

    assert layout.batch_id(b"abc") == hashlib.sha256(b"abc").hexdigest()[:16]
    assert layout.is_batch_id(layout.batch_id(b"abc"))
    assert not layout.is_batch_id("0123") and not layout.is_batch_id("0123456789ABCDEF")
    assert layout.suffixed_file_name("data.jsonl", b"abc") == f"data-{layout.batch_id(b'abc')}.jsonl"
    assert len(layout.suffixed_file_name("x" * 60 + ".jsonl", b"abc")) <= 64


# --- names -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda n: layout.model_info_key(n),
        lambda n: layout.champion_key(n),
        lambda n: layout.history_key(n),
        lambda n: layout.guards_key(n),
        lambda n: layout.version_prefix("demo", n),
        lambda n: layout.task_spec_key(n),
        lambda n: layout.batches_prefix(n),
        lambda n: layout.landing_prefix(n),
        lambda n: layout.quarantine_prefix(n, "0123456789abcdef"),
        lambda n: layout.guard_prefix("demo", n),
        lambda n: layout.announced_key(n, "incoming/count/a.jsonl", "ab"),
    ],
)
@pytest.mark.parametrize("name", ["../etc", "Upper", "", "a/b", ".hidden", "a..b", "_invalid", "x" * 65])
def test_a_name_that_is_not_safe_never_becomes_a_key(build, name: str) -> None:
    with pytest.raises(InvalidName):
        build(name)


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("../My Data (v2).JSONL", "my_data_v2.jsonl"),
        ("C:\\Users\\me\\Train.csv", "train.csv"),
        (".hidden.jsonl", "hidden.jsonl"),
        ("...", "data"),
        ("a" * 100 + ".parquet", "a" * 56 + ".parquet"),
        ("data.", "data"),
        ("naïve résumé.jsonl", "na_ve_r_sum.jsonl"),
    ],
)
def test_safe_file_name(given: str, safe: str) -> None:
    assert layout.safe_file_name(given) == safe


@pytest.mark.parametrize("name", ["delta.safetensors", "adapter/model.safetensors", "card.md", "Tokenizer.json"])
def test_file_names_of_a_version(name: str) -> None:
    assert layout.is_file_name(name)


@pytest.mark.parametrize("name", ["", "../x", "a/../b", "/abs", "a//b", ".hidden", "a b", "a..b", "x" * 129, None])
def test_file_names_refused(name) -> None:
    assert not layout.is_file_name(name)


# --- the landing zone: one predicate for the intake and the watcher ---------------------------------------------------


LANDED = {
    "incoming/count/a.jsonl": True,
    "incoming/count/sub/b.csv": True,
    "incoming/count/.hidden.jsonl": True,  # ingested: quarantined with the reason, never left waiting
    "incoming/count/a.jsonl.part": True,  # a partial upload's name: unsupported format, quarantined
    "incoming/count/notes.txt": True,  # unsupported extension: quarantined
    "incoming/stray.jsonl": True,  # no task folder: quarantined under _invalid
    "incoming/stray.png": True,  # likewise: an image needs a task folder to wait in
    "incoming/Bad Name/c.jsonl": True,  # invalid task folder: quarantined under _invalid
    "incoming/count/pic.png": False,  # an image waits for the data file that references it
    "incoming/count/imgs/pic.JPEG": False,
    "incoming/Bad Name/pic.png": False,  # an image in any task folder waits, valid name or not
    "incoming/count/": False,  # a folder marker (S3 consoles)
    "incoming/": False,
    "tasks/count/task.json": False,
    "incomingx/count/a.jsonl": False,
}


@pytest.mark.parametrize(("key", "waiting"), LANDED.items())
def test_is_waiting_data_file(key: str, waiting: bool) -> None:
    assert layout.is_waiting_data_file(key) is waiting


def test_the_watcher_announces_exactly_what_the_intake_ingests(store) -> None:
    """Whatever lands (hidden and partial-upload names, odd extensions, images in valid and invalid task folders, no
    task folder, nested folders), the files the watcher announces are the files the intake takes."""
    pytest.importorskip("prefect")
    from skillgraft.data import Intake, TaskSpec
    from tasks import arrivals

    keys = [k for k in LANDED if k.startswith("incoming/") and not k.endswith("/")]
    for key in keys:
        store.put_new(key, f"{{}}\n{key}".encode())
    intake = Intake(store)
    intake.register_task(TaskSpec(name="count", answer_type="number"))
    watched = {a.key for a in arrivals.unannounced(store, "demo")}
    listed = set(intake.incoming())
    assert watched == listed == {k for k in keys if LANDED[k]}
    taken = {r.key for r in intake.ingest()}
    assert taken == watched
    left = set(store.keys("incoming/"))
    assert left == {k for k in keys if not LANDED[k]}  # only the waiting images stay


# --- nobody else spells a key -----------------------------------------------------------------------------------------

SCANNED = ("skillgraft", "tasks", "flows", "deployments")
OWNER = ROOT / "skillgraft" / "layout.py"

KEY_PATTERNS = [
    (r"(?<![\w.-])models/", "models/..."),
    (r"(?<![\w.-])tasks/(?!\w+\.py)", "tasks/..."),
    (r"versions/", ".../versions/..."),
    (r"batches/", ".../batches/..."),
    (r"(?<![\w.-])incoming/", "incoming/..."),
    (r"(?<![\w.-])quarantine/", "quarantine/..."),
    (r"(?<![\w.-])announced/", "announced/..."),
    (r"(?<![\w.-])images/", "images/..."),
    (r"/base/|^base/", ".../base/..."),
    (r"(?<![\w.-])guards/", ".../guards/..."),
    (r"champion\.json", "champion.json"),
    (r"history\.jsonl", "history.jsonl"),
    (r"guards\.json", "guards.json"),
    (r"manifest\.json", "manifest.json"),
    (r"claim\.json", "claim.json"),
    (r"model\.json", "model.json"),
    (r"task\.json", "task.json"),
    (r"batch\.json", "batch.json"),
    (r"metrics\.json", "metrics.json"),
    (r"decision\.json", "decision.json"),
    (r"^card\.md$", "card.md"),
    (r"delta\.safetensors", "delta.safetensors"),
    (r"adapter_config\.json", "adapter_config.json"),
    (r"adapter_model\.safetensors", "adapter_model.safetensors"),
    (r"^skillgraft\.json$", "skillgraft.json"),
]
SEGMENTS = {"models", "tasks", "incoming", "quarantine", "announced", "_invalid", "versions", "batches", "images"}
"""A top-level folder or key segment as a literal of its own: a key when it is defined as a constant, or joined into
a string (an f-string part, a '+' operand, an element of a sequence passed to ``join``); elsewhere (``task or
"incoming"`` in a run name, a table column "tasks") it is a word."""
CODE_PATTERNS = [(r"hexdigest\(\)\[:16\]", "a batch id computed by hand (layout.batch_id)")]
PROSE_KEYWORDS = {"description", "help"}


def _prose(tree: ast.AST) -> set[int]:
    """ids of the string constants that are documentation, not keys: docstrings (module, class, function, attribute)
    and ``description=`` / ``help=`` texts."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
        for field in ("body", "orelse"):  # attribute docstrings: a bare string right after an assignment
            stmts = getattr(node, field, None)
            if isinstance(stmts, list):
                for prev, stmt in zip(stmts, stmts[1:]):
                    if (isinstance(prev, (ast.Assign, ast.AnnAssign)) and isinstance(stmt, ast.Expr)
                            and isinstance(stmt.value, ast.Constant)):  # fmt: skip
                        out.add(id(stmt.value))
        if isinstance(node, ast.keyword) and node.arg in PROSE_KEYWORDS:
            out.update(id(n) for n in ast.walk(node.value) if isinstance(n, ast.Constant))
    return out


def _joined(tree: ast.AST) -> set[int]:
    """ids of the string constants that are assigned as a constant or joined into a longer string or sequence."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            out.add(id(node.value))
        elif isinstance(node, ast.JoinedStr):
            out.update(id(v) for v in node.values)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            out.update((id(node.left), id(node.right)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join":
            for arg in node.args:
                if isinstance(arg, (ast.List, ast.Tuple)):
                    out.update(id(e) for e in arg.elts)
    return out


def key_literals(source: str) -> list[tuple[int, str, str]]:
    """(line, literal, what) for every string constant of ``source`` (f-string parts included) that spells a store key
    or part of one, documentation excepted; and for code that computes a batch id by hand."""
    tree = ast.parse(source)
    prose, joined = _prose(tree), _joined(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in prose:
            continue
        for pattern, what in KEY_PATTERNS:
            if re.search(pattern, node.value):
                found.append((node.lineno, node.value, what))
        if node.value in SEGMENTS and id(node) in joined:
            found.append((node.lineno, node.value, f"the key segment {node.value!r}"))
    for number, line in enumerate(source.splitlines(), start=1):
        for pattern, what in CODE_PATTERNS:
            if re.search(pattern, line):
                found.append((number, line.strip(), what))
    return found


def test_no_module_but_the_layout_spells_a_store_key() -> None:
    files = sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py") if p != OWNER)
    assert len(files) > 40  # the scan really looks at the sources
    offences = [f"{p.relative_to(ROOT)}:{line}: {what} in {text!r}"
                for p in files for line, text, what in key_literals(p.read_text())]  # fmt: skip
    assert not offences, "store keys spelled outside skillgraft/layout.py:\n" + "\n".join(offences)


@pytest.mark.parametrize(
    "source",
    [
        'key = f"models/{model}/champion.json"',
        'key = f"{root}/versions/{v}/manifest.json"',
        'prefix = "incoming/"',
        'INCOMING = "incoming"',
        'where = f"quarantine/{task}/{batch}/"',
        'k = f"tasks/{t}/batches/{b}/batch.json"',
        'store.get(f"tasks/{name}/task.json")',
        'log = root + "/history.jsonl"',
        'g = "/".join(["models", m, "guards.json"])',
        'reg.attach(v, "metrics.json", data)',
        "bid = hashlib.sha256(data).hexdigest()[:16]",
        'marker = f"announced/{model}/{rest}@{sha}.json"',
        'prefix = f"{root}/base/"',
        'key = f"models/{m}/guards/{g}/base-{h}.json"',
        'ref = f"images/{digest}{suffix}"',
        'files = {"adapter_config.json": config, "adapter_model.safetensors": weights}',
        'folder = "quarantine"',
        'key = "/".join(["incoming", task, name])',
        'key = "tasks" + "/" + t',
    ],
)
def test_the_scan_catches_a_reintroduced_key(source: str) -> None:
    assert key_literals(source), source


def test_the_scan_lets_prose_and_layout_calls_through() -> None:
    source = '''
"""Module docs may show models/<m>/champion.json and incoming/<task>/."""
from skillgraft import layout
X = 1
"""An attribute docstring naming tasks/<task>/task.json."""
class Arrival(BaseModel):
    key: str = Field(description="the landing-zone key, incoming/<task>/<file>")
def f(m, task):
    """Read models/<m>/history.jsonl."""
    name = f"{m}-{task or 'incoming'}"
    columns = ("version", "tasks", "created")
    return layout.champion_key(m), f"see tasks/arrivals.py", "quarantined", "announce", name, columns
'''
    assert key_literals(source) == []
