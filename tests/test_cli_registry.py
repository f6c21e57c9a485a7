"""The registry commands (status, history, promote, rollback, export) through typer's CliRunner, on a store holding
the demo model with real deltas (see the `demo_registry` fixture): outputs, exit codes, and what they leave behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from skillgraft.cli import app
from skillgraft.cli.registry import EXIT_CHECK_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_USAGE
from skillgraft.evaluate import RegressionReport
from skillgraft.gate import Decision, GatePolicy
from skillgraft.models import load_model
from skillgraft.refs import Manifest
from skillgraft.registry import CHECK_ACTIONS, Registry
from skillgraft.steps import load_version
from skillgraft.store.base import ObjectStore


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        # rich wraps long lines at 80 columns under CliRunner: compare with whitespace collapsed
        self.out, self.err = " ".join(out.split()), " ".join(err.split())
        self.raw_out = out


def cli(store_url: str, *args: str, env: dict[str, str] | None = None) -> Run:
    result = CliRunner().invoke(app, [*args, "--store", store_url], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


def add_version(reg: Registry, demo_chain: Any, parent: str, decision: bytes | None, index: int = 1) -> str:
    manifest = Manifest(model="demo", version="pending", parent=parent, base=demo_chain.base, recipe={"kind": "sa_proj"},
                        tasks=demo_chain.tasks)  # fmt: skip
    v = reg.create_version({"delta.safetensors": demo_chain.versions[index].delta}, manifest).version
    reg.attach(v, "metrics.json", demo_chain.versions[index].metrics)
    if decision is not None:
        reg.attach(v, "decision.json", decision)
    return v


def demo_decision(version: str, champion: str, promote: bool = True) -> bytes:
    reasons = ["ok new task 'first': within limits"] if promote else ["FAIL old task 'first': regressed"]
    decision = Decision(promote=promote, reasons=reasons, champion=champion, candidate=version, policy=GatePolicy())
    return decision.model_dump_json().encode()


def moves(reg: Registry) -> list[tuple[str, str, str | None]]:
    """The history without the post-promotion check entries (asserted on separately, with ``checks``)."""
    return [(e.action, e.version, e.from_version) for e in reg.history() if e.action not in CHECK_ACTIONS]


def checks(reg: Registry) -> list[tuple[str, str]]:
    return [(e.action, e.version) for e in reg.history() if e.action in CHECK_ACTIONS]


@pytest.fixture
def local_url(local_store: ObjectStore) -> str:
    return str(local_store.root)  # type: ignore[attr-defined]


# --- status and history ---------------------------------------------------------------------------------------------


def test_status_shows_the_champion_and_flags_incomplete_and_corrupt_versions(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry]
) -> None:
    demo_registry(local_store, versions=3, champion="v2")
    local_store.put_new("models/demo/versions/v4/claim.json", b'{"actor": "run-42", "at": "2026-01-01T00:00:00+00:00"}')
    key = "models/demo/versions/v3/delta.safetensors"
    data = local_store.get(key)
    local_store.delete(key)
    local_store.put_new(key, data[:-1] + bytes([data[-1] ^ 1]))

    run = cli(local_url, "status")
    assert run.code == 0, run.err
    assert "champion: v2 since" in run.out and "by tester@ci" in run.out
    assert "v4 incomplete: no manifest.json: incomplete (claimed by run-42 at 2026-01-01T00:00:00+00:00" in run.out
    assert "v3 corrupt: delta.safetensors: sha256" in run.out

    doc = json.loads(cli(local_url, "status", "--json").raw_out)
    assert doc["champion"]["version"] == "v2" and doc["champion_ok"] is True and doc["verified"] is True
    assert [(v["version"], v["status"], v["champion"]) for v in doc["versions"]] == [
        ("v1", "complete", False), ("v2", "complete", True), ("v3", "corrupt", False), ("v4", "incomplete", False),
    ]  # fmt: skip
    # Without --verify only missing manifests and files are seen: v3's bytes are not read.
    quick = json.loads(cli(local_url, "status", "--json", "--no-verify").raw_out)
    assert [v["status"] for v in quick["versions"]] == ["complete", "complete", "complete", "incomplete"]


def test_status_exits_5_when_the_champion_itself_is_corrupt(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry]
) -> None:
    demo_registry(local_store, versions=2, champion="v2")
    local_store.delete("models/demo/versions/v1/delta.safetensors")  # v2 builds on v1: the champion can't load
    run = cli(local_url, "status")
    assert run.code == EXIT_INVALID
    assert "champion v2 is corrupt: parent v1 is corrupt: v2 can't be loaded" in run.err
    assert "skillgraft rollback" in run.err


def test_history_shows_every_move_with_who_when_why(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(local_store, versions=3, champion="v2")
    reg.reject("v3", reason="regressed on first")
    assert cli(local_url, "rollback", "--reason", "bad outputs in prod").code == 0
    assert cli(local_url, "promote", "v3", "--force", "--reason", "hotfix", "--no-check").code == 0

    lines = [json.loads(line) for line in cli(local_url, "history", "--json").raw_out.splitlines()]
    assert [(e["action"], e["version"], e.get("from")) for e in lines] == [
        ("promote", "v1", None), ("promote", "v2", "v1"), ("reject", "v3", None), ("rollback", "v1", "v2"),
        ("promote", "v3", "v1"), ("post-check-skipped", "v3", None),
    ]  # fmt: skip
    assert lines[3]["reason"] == "bad outputs in prod" and lines[4]["forced"] is True
    assert all(e["actor"] and e["at"] for e in lines)
    table = cli(local_url, "history")
    assert table.code == 0 and "(forced)" in table.out and "bad outputs in prod" in table.out
    assert [
        json.loads(x)["version"] for x in cli(local_url, "history", "--json", "--limit", "2").raw_out.splitlines()
    ] == ["v3", "v3"]


# --- promote --------------------------------------------------------------------------------------------------------


def test_promote_through_the_gate_moves_the_champion_and_passes_the_post_promotion_check(
    store: ObjectStore, store_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(store, versions=2, champion="v1")  # v2's decision: promote, against v1
    run = cli(store_url, "promote", "v2", "--reason", "reviewed by alice")
    assert run.code == 0, run.err
    assert (
        "champion of demo: v1 → v2" in run.out and "post-promotion check passed: smoke scores match the gate" in run.out
    )
    assert moves(reg)[-1] == ("promote", "v2", "v1") and checks(reg) == [("post-check-passed", "v2")]
    last = [e for e in reg.history() if e.action not in CHECK_ACTIONS][-1]
    assert last.reason == "reviewed by alice; gate decision: promote" and last.forced is False


def test_promote_refuses_what_the_gate_did_not_pass_against_the_current_champion(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry], demo_chain: Any
) -> None:
    reg = demo_registry(local_store, versions=3, champion="v1")  # v3 was gated against v2, not v1
    rejected = add_version(reg, demo_chain, "v1", demo_decision("v4", "v1", promote=False))
    never_gated = add_version(reg, demo_chain, "v1", None)
    history = reg.history()

    cases = {
        "v3": "refusing to promote v3: v3 was gated against v2, but the champion is now v1",
        rejected: "refusing to promote v4: the gate rejected v4 against v1: old task 'first': regressed",
        never_gated: "refusing to promote v5: v5 has no stored gate decision (decision.json): it was never gated",
    }
    for version, message in cases.items():
        run = cli(local_url, "promote", version)
        assert run.code == EXIT_REFUSED, (version, run.err)
        assert message in run.err and "Pass --force" in run.err and "nothing was changed" in run.err
    assert reg.champion().version == "v1" and reg.history() == history  # type: ignore[union-attr]


def test_forced_promotion_is_recorded_with_the_reason_the_gate_would_have_refused(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry], demo_chain: Any
) -> None:
    reg = demo_registry(local_store, versions=1, champion="v1")
    version = add_version(reg, demo_chain, "v1", None)
    run = cli(local_url, "promote", version, "--force", "--reason", "hotfix for ticket 7")
    assert run.code == 0, run.err
    assert "v1 → v2 (forced)" in run.out and "post-promotion check passed" in run.out
    last = [e for e in reg.history() if e.action not in CHECK_ACTIONS][-1]
    assert (last.action, last.version, last.forced) == ("promote", "v2", True)
    assert (
        last.reason
        == "hotfix for ticket 7; forced past the gate: v2 has no stored gate decision (decision.json): it was never gated"
    )
    assert reg.champion().forced is True  # type: ignore[union-attr]


def test_promote_rolls_back_automatically_when_the_post_promotion_check_fails(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry], demo_chain: Any
) -> None:
    reg = demo_registry(local_store, versions=1, champion="v1")
    manifest = Manifest(model="demo", version="pending", parent="v1", base=demo_chain.base, recipe={"kind": "sa_proj"},
                        tasks=demo_chain.tasks)  # fmt: skip
    v2 = reg.create_version({"delta.safetensors": demo_chain.versions[1].delta}, manifest).version
    report = RegressionReport.model_validate_json(demo_chain.versions[1].metrics)
    for score in report.candidate_scores.values():
        score.correct = [1] * len(score.correct)  # gate scores the weights don't reproduce
    reg.attach(v2, "metrics.json", report.model_dump_json().encode())
    reg.attach(v2, "decision.json", demo_decision(v2, "v1"))

    run = cli(local_url, "promote", v2)
    assert run.code == EXIT_CHECK_FAILED, run.err
    assert "v1 → v2" in run.out
    assert "post-promotion check of v2 failed: task first: smoke score 0.000 vs 1.000 at the gate" in run.err
    assert "Rolled back automatically: champion is v1 again" in run.err
    assert reg.champion().version == "v1"  # type: ignore[union-attr]
    assert moves(reg)[-2:] == [("promote", "v2", "v1"), ("rollback", "v1", "v2")]
    assert reg.history()[-1].reason.startswith("automatic rollback: post-promotion check of v2 failed")
    assert checks(reg) == [("post-check-failed", "v2")]


def test_promote_errors_name_what_is_wrong_and_change_nothing(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    reg = demo_registry(local_store, versions=2, champion="v1")
    local_store.put_new("models/demo/versions/v3/claim.json", b"{}")
    history = reg.history()

    run = cli(local_url, "promote", "v9")
    assert run.code == EXIT_NOT_FOUND and "demo@v9 does not exist" in run.err
    run = cli(local_url, "promote", "v3", "--force")
    assert run.code == EXIT_INVALID and "demo@v3 has no manifest.json: it is incomplete" in run.err
    run = cli(local_url, "promote", "v1")
    assert run.code == EXIT_NOT_FOUND and "already the champion" in run.err
    run = cli(local_url, "promote", "../v1")
    assert run.code == EXIT_USAGE and "invalid version name" in run.err
    run = cli(local_url, "promote", "v2", "--model", "nosuch")
    assert run.code == EXIT_NOT_FOUND and "model 'nosuch' is not registered in" in run.err
    run = cli(str(tmp_path / "empty-store"), "status")
    assert run.code == EXIT_NOT_FOUND and "model 'demo' is not registered" in run.err
    assert reg.champion().version == "v1" and reg.history() == history  # type: ignore[union-attr]


# --- rollback -------------------------------------------------------------------------------------------------------


def test_rollback_walks_back_the_chain_of_champions_and_errors_clearly(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(local_store, versions=4, champion=None)
    run = cli(local_url, "rollback")
    assert run.code == EXIT_NOT_FOUND and "model 'demo' has no champion" in run.err
    for v in ("v1", "v2", "v3"):
        reg.promote(v, reason="gate passed")

    run = cli(local_url, "rollback")
    assert run.code == 0 and "champion of demo: v3 → v2" in run.out
    run = cli(local_url, "rollback", "v4")
    assert run.code == EXIT_NOT_FOUND and "v4 was never champion" in run.err
    run = cli(local_url, "rollback", "v8")
    assert run.code == EXIT_NOT_FOUND and "demo@v8 does not exist" in run.err
    assert cli(local_url, "rollback").code == 0
    run = cli(local_url, "rollback")
    assert run.code == EXIT_NOT_FOUND and "nothing to roll back to" in run.err
    assert moves(reg)[-2:] == [("rollback", "v2", "v3"), ("rollback", "v1", "v2")]


def test_rollback_with_nothing_before_gives_a_command_line_hint(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry]
) -> None:
    demo_registry(local_store, versions=2, champion="v1")
    run = cli(local_url, "rollback")
    assert run.code == EXIT_NOT_FOUND and "no previous champion recorded" in run.err
    assert "`skillgraft rollback VERSION`" in run.err and "to=<" not in run.err and "force=True" not in run.err
    run = cli(local_url, "rollback", "v2")
    assert run.code == EXIT_NOT_FOUND and "`skillgraft promote v2`, with --force if the gate rejected it" in run.err


def test_rollback_to_a_version_that_was_champion_only_by_force_needs_force_again(
    store: ObjectStore, store_url: str, demo_registry: Callable[..., Registry], demo_chain: Any
) -> None:
    reg = demo_registry(store, versions=1, champion="v1")
    forced = add_version(reg, demo_chain, "v1", demo_decision("v2", "v1", promote=False))  # the gate rejected v2
    reg.reject(forced, reason="regressed on first")
    assert cli(store_url, "promote", forced, "--force", "--no-check", "--reason", "hotfix").code == 0
    reg.attach(add_version(reg, demo_chain, forced, None, index=2), "decision.json", demo_decision("v3", forced))
    assert cli(store_url, "promote", "v3", "--no-check").code == 0

    run = cli(store_url, "rollback")  # back to v2, which only --force ever made champion
    assert run.code == EXIT_REFUSED, run.out
    assert "v2 was champion only through a forced promotion" in run.err and "--force" in run.err
    assert reg.champion().version == "v3"  # type: ignore[union-attr]  # nothing changed
    run = cli(store_url, "rollback", "--force", "--reason", "v3 misbehaves")
    assert run.code == 0 and "v3 → v2 (forced)" in run.out, run.err
    last = [e for e in reg.history() if e.action not in CHECK_ACTIONS][-1]
    assert (last.action, last.version, last.forced) == ("rollback", "v2", True)
    assert reg.champion().forced is True  # type: ignore[union-attr]
    assert "rollback (forced) v3 → v2" in cli(store_url, "history").out
    assert cli(store_url, "rollback").code == 0  # v1 went through the gate: no --force needed


# --- a lost champion pointer, an unchecked champion, a corrupt base -------------------------------------------------


def test_a_deleted_champion_pointer_is_reported_refused_and_repaired_from_the_history(
    store: ObjectStore, store_url: str, demo_registry: Callable[..., Registry]
) -> None:
    from skillgraft import steps
    from skillgraft.config import SkillgraftConfig
    from skillgraft.registry import ChampionMissing

    reg = demo_registry(store, versions=3, champion="v2")
    store.delete("models/demo/champion.json")  # deleted by hand, or lost

    run = cli(store_url, "status")
    assert run.code == EXIT_INVALID, run.out
    assert "champion: MISSING" in run.out and "champion: none" not in run.out
    assert "champion.json is missing, but the history records champions (the last: promote of v2" in run.err
    assert "`skillgraft repair`" in run.err
    code_json = CliRunner().invoke(app, ["status", "--json", "--store", store_url])
    doc = json.loads(code_json.stdout)
    assert code_json.exit_code == EXIT_INVALID and doc["champion_missing"]["version"] == "v2" and not doc["champion_ok"]
    run = cli(store_url, "rollback")
    assert run.code == EXIT_INVALID and "skillgraft repair" in run.err and "nothing was promoted" not in run.err
    run = cli(store_url, "promote", "v3", "--force")
    assert run.code == EXIT_INVALID and "Refusing to train, promote or roll back" in run.err
    with pytest.raises(ChampionMissing, match="restart the lineage from the bare base"):  # the flow's first step
        steps.finish_interrupted(store, SkillgraftConfig(store=store_url))
    assert not store.exists("models/demo/champion.json") and len(reg.history()) == 2  # nothing was written

    run = cli(store_url, "repair")
    assert run.code == 0 and "restored from the history: v2 (previous v1); recorded as a repair" in run.out, run.err
    pointer = reg.champion()
    assert pointer is not None and (pointer.version, pointer.previous, pointer.action) == ("v2", "v1", "repair")
    last = reg.history()[-1]
    assert (last.action, last.version, last.previous) == ("repair", "v2", "v1")
    assert "champion.json was missing, rebuilt from the history" in last.reason
    assert reg.unlogged_move() is None and reg.unchecked_champion() is None
    run = cli(store_url, "status")
    assert run.code == 0 and "champion: v2" in run.out, run.err
    assert "repair none → v2" in cli(store_url, "history").out
    run = cli(store_url, "repair")
    assert run.code == EXIT_NOT_FOUND and "nothing to repair" in run.err
    assert cli(store_url, "rollback").code == 0 and reg.champion().version == "v1"  # type: ignore[union-attr]


def test_no_pointer_and_no_history_is_a_model_with_no_champion_yet(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry]
) -> None:
    demo_registry(local_store, versions=1, champion=None)
    run = cli(local_url, "status")
    assert run.code == 0 and "champion: none" in run.out, run.err
    run = cli(local_url, "repair")
    assert run.code == EXIT_NOT_FOUND and "records no champion" in run.err and "nothing was ever promoted" in run.err


def test_repair_to_a_named_former_champion_and_refusals(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(local_store, versions=3, champion="v3")
    local_store.delete("models/demo/champion.json")
    assert cli(local_url, "repair", "v9").code == EXIT_NOT_FOUND
    run = cli(local_url, "repair", "v2")
    assert run.code == 0, run.err
    assert (reg.champion().version, reg.champion().previous) == ("v2", "v1")  # type: ignore[union-attr]


def test_check_runs_the_post_promotion_check_a_dead_promoter_left_undone(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(local_store, versions=2, champion="v2")  # promoted by the library: no check recorded
    run = cli(local_url, "status")
    assert (
        run.code == 0 and "champion v2 was never checked after promotion" in run.out and "skillgraft check" in run.out
    )
    run = cli(local_url, "check")
    assert run.code == 0 and "post-promotion check passed" in run.out, run.err
    assert checks(reg) == [("post-check-passed", "v2")]
    assert "never checked" not in cli(local_url, "status").out


def test_a_corrupted_base_snapshot_fails_status_and_promotion_like_a_corrupt_delta(
    store: ObjectStore, store_url: str, demo_registry: Callable[..., Registry]
) -> None:
    reg = demo_registry(store, versions=2, champion="v1")
    name = next(k for k in store.keys("models/demo/base/") if k.endswith(".safetensors"))
    data = store.get(name)
    store.delete(name)
    store.put_new(name, data[:-1] + bytes([data[-1] ^ 1]))  # one flipped bit in the base weights

    run = cli(store_url, "status")
    assert run.code == EXIT_INVALID, run.out
    assert "the base snapshot of demo is corrupt, so no version can be loaded" in run.err and "sha256" in run.err
    assert "restore models/demo/base/" in run.err
    run = cli(store_url, "promote", "v2")
    assert run.code == EXIT_INVALID and "the base snapshot of 'demo' is corrupt" in run.err
    assert reg.champion().version == "v1"  # type: ignore[union-attr]
    assert cli(store_url, "status", "--no-verify").code == 0  # only presence is checked without --verify
    store.delete(name)
    run = cli(store_url, "status", "--no-verify")
    assert run.code == EXIT_INVALID and "missing" in run.err


# --- export ---------------------------------------------------------------------------------------------------------


def test_export_writes_a_full_model_directory_that_loads_back_bit_exactly(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    reg = demo_registry(local_store, versions=2, champion="v1")
    out = tmp_path / "serve" / "demo-v2"
    run = cli(local_url, "export", "v2", "--out", str(out))
    assert run.code == 0, run.err
    exported = load_model(str(out))
    expected = load_version(reg, "v2").model.state_dict()
    got = exported.model.state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    assert exported.tokenizer("first : a b").input_ids == load_version(reg, "v2").tokenizer("first : a b").input_ids
    provenance = json.loads((out / "skillgraft.json").read_text())
    assert (provenance["model"], provenance["version"], provenance["chain"]) == ("demo", "v2", ["v1", "v2"])

    run = cli(local_url, "export", "v1", "--out", str(out))  # never overwrites
    assert run.code == EXIT_USAGE and "already exists and is not an empty directory" in run.err
    champion_out = tmp_path / "champion"
    assert cli(local_url, "export", "--out", str(champion_out)).code == 0
    assert json.loads((champion_out / "skillgraft.json").read_text())["version"] == "v1"


def test_export_of_a_corrupt_version_fails_and_leaves_no_directory(
    local_store: ObjectStore, local_url: str, demo_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    demo_registry(local_store, versions=2, champion=None)
    out = tmp_path / "exports" / "demo"
    run = cli(local_url, "export", "--out", str(out))
    assert run.code == EXIT_NOT_FOUND and "has no champion" in run.err
    key = "models/demo/versions/v1/delta.safetensors"
    data = local_store.get(key)
    local_store.delete(key)
    local_store.put_new(key, data + b"\0")
    run = cli(local_url, "export", "v2", "--out", str(out))
    assert run.code == EXIT_INVALID and "sha256" in run.err
    assert not out.exists() and (not out.parent.exists() or list(out.parent.iterdir()) == [])


# --- S3 and credentials ---------------------------------------------------------------------------------------------


def test_commands_on_s3_never_print_credentials(
    s3_store: ObjectStore, s3_endpoint: str, demo_registry: Callable[..., Registry], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    demo_registry(s3_store, versions=2, champion="v1")
    key_id, secret = "AKIASKILLGRAFTTESTKEY", "sg-secret-value-never-printed"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("SKILLGRAFT_S3_ENDPOINT_URL", s3_endpoint)
    url = s3_store.url
    runs = [
        cli(url, "status"),
        cli(url, "status", "--json"),
        cli(url, "promote", "v2", "--no-check"),
        cli(url, "history"),
        cli(url, "rollback"),
        cli(url, "promote", "v7"),
        cli(url.replace("s3://", f"s3://{key_id}:{secret}@"), "status"),
        cli(url, "status", env={"SKILLGRAFT_S3_ENDPOINT_URL": s3_endpoint.replace("http://", f"http://{key_id}:{secret}@")}),
    ]  # fmt: skip
    assert [r.code for r in runs] == [0, 0, 0, 0, 0, EXIT_NOT_FOUND, EXIT_NOT_FOUND, 0]
    assert f"in {url} (endpoint {s3_endpoint})" in runs[0].out
    assert "must not carry credentials" in runs[6].err
    for run in runs:
        assert key_id not in run.out + run.err and secret not in run.out + run.err


def test_forgetting_command_prints_the_accuracy_matrix_of_the_lineage(tmp_path):
    from typer.testing import CliRunner

    from skillgraft import demo, steps
    from skillgraft.cli import app
    from skillgraft.config import SkillgraftConfig
    from skillgraft.evaluate import RegressionReport, SuiteRow, TaskScore
    from skillgraft.refs import BatchRef, Manifest
    from skillgraft.registry import Registry
    from skillgraft.store import LocalStore

    store = LocalStore(tmp_path)
    base = steps.ensure_model(store, SkillgraftConfig(store=str(tmp_path)))
    reg = Registry(store, demo.MODEL_NAME)
    m = Manifest(model="demo", version="x", parent=None, base=base, recipe={"kind": "full"}, tasks=["first"],
                 batches=[BatchRef(task="first", batch_id="0" * 16)])  # fmt: skip
    v1 = reg.create_version({steps.DELTA_FILE: b"-"}, m).version
    report = RegressionReport(champion="base", candidate=v1, rows=[
        SuiteRow(task="first", new=True, metric="exact_match", n=10, champion=0.1, candidate=0.8)],
        champion_scores={"first": TaskScore(task="first", metric="exact_match", score=0.1, n=10)},
        candidate_scores={"first": TaskScore(task="first", metric="exact_match", score=0.8, n=10)})  # fmt: skip
    reg.attach(v1, "metrics.json", report.model_dump_json().encode())
    reg.promote(v1, reason="test")
    result = CliRunner().invoke(app, ["forgetting", "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "| v1 | 0.800* |" in result.output and "| base | 0.100 |" in result.output
    empty = CliRunner().invoke(app, ["forgetting", "--store", str(tmp_path / "none"), "--model", "nothing"])
    assert empty.exit_code == 1 and "nothing" in empty.output
    assert "average accuracy after v1: 0.800" in result.output
