"""Forgetting metrics on an accuracy matrix, checked against numbers worked out by hand, and the matrix loaded back
from a registry's versions and their metrics.json attachments."""

from __future__ import annotations

import pytest

from skillgraft.evaluate import RegressionReport, SuiteRow, TaskScore
from skillgraft.forgetting import (
    AccuracyMatrix,
    average_accuracy,
    backward_transfer,
    drop_vs_base,
    forgetting,
    load_matrix,
    summarize,
)
from skillgraft.refs import BaseRef, BatchRef, Manifest
from skillgraft.registry import Registry
from skillgraft.store.local import LocalStore

#        first last  count sum        learned: first/last at v1, count at v2, sum at v3
R = [
    [0.50, 0.20, 0.00, 0.00],  # base
    [0.90, 0.80, 0.00, 0.10],  # v1
    [0.85, 0.80, 0.70, 0.10],  # v2
    [0.80, 0.75, 0.60, 0.90],  # v3
]
LEARNED = [1, 1, 2, 3]


def test_average_accuracy_counts_only_tasks_learned_so_far():
    assert average_accuracy(R, LEARNED) == pytest.approx((0.80 + 0.75 + 0.60 + 0.90) / 4)  # 0.7625
    assert average_accuracy(R, LEARNED, row=2) == pytest.approx((0.85 + 0.80 + 0.70) / 3)
    assert average_accuracy(R, LEARNED, row=1) == pytest.approx(0.85)
    assert average_accuracy(R, LEARNED, row=0) is None  # the base has learned nothing yet


def test_backward_transfer_is_the_mean_change_since_each_task_was_learned():
    # (0.80 − 0.90) + (0.75 − 0.80) + (0.60 − 0.70), over 3 tasks; sum is learned in the last row and left out
    assert backward_transfer(R, LEARNED) == pytest.approx(-0.25 / 3)
    assert backward_transfer(R[:2], LEARNED) is None  # nothing learned before the last row


def test_forgetting_is_the_best_earlier_score_minus_the_last():
    f = forgetting(R, LEARNED)
    assert f[:3] == pytest.approx([0.10, 0.05, 0.10])
    assert f[3] is None
    # a task that got better after it was learned forgets from its peak, not from its first score
    assert forgetting([[0.5], [0.6], [0.9], [0.7]], [1]) == pytest.approx([0.2])
    # unknown scores are skipped; a task never trained in this history has no forgetting
    assert forgetting([[None, 0.4], [0.8, 0.4], [None, 0.3], [0.6, 0.3]], [1, None]) == pytest.approx([0.2, None])


def test_drop_vs_base_is_positive_when_worse_than_the_base():
    assert drop_vs_base(R) == pytest.approx([-0.30, -0.55, -0.60, -0.90])
    assert drop_vs_base([[0.9, None], [0.7, 0.5]]) == pytest.approx([0.2, None])
    assert drop_vs_base(R, base_row=None) == [None] * 4


def test_summarize_reports_every_metric_and_a_table():
    m = AccuracyMatrix(rows=["base", "v1", "v2", "v3"], tasks=["first", "last", "count", "sum"], scores=R,
                       learned_at=LEARNED, base_row=0)  # fmt: skip
    rep = summarize(m)
    assert rep.average_accuracy[-1] == pytest.approx(0.7625)
    assert rep.average_forgetting == pytest.approx(0.25 / 3)
    assert rep.forgetting["count"] == pytest.approx(0.10) and rep.forgetting["sum"] is None
    assert rep.drop_vs_base["first"] == pytest.approx(-0.30)
    md = rep.markdown()
    assert "| v2 | 0.850 | 0.800 | 0.700* | 0.100 |" in md
    assert "- backward transfer: -0.083" in md and "| count | +0.100 | -0.600 |" in md


# --- from a registry -------------------------------------------------------------------------------------------------

BASE = BaseRef(source="builtin:test", sha256="0" * 64, model_type="llama")


def _scores(values: dict[str, float]) -> dict[str, TaskScore]:
    return {t: TaskScore(task=t, metric="exact_match", score=v, n=10) for t, v in values.items()}


def _version(reg: Registry, parent, trained, tasks, champion, candidate, *, metrics=True):
    m = Manifest(model="demo", version="pending", parent=parent, base=BASE, recipe={"kind": "sa_proj"},
                 batches=[BatchRef(task=t, batch_id="b" + t) for t in trained], tasks=tasks)  # fmt: skip
    v = reg.create_version({"delta.safetensors": f"{parent}{trained}".encode()}, m).version
    if metrics:
        rows = [SuiteRow(task=t, new=t in trained, metric="exact_match", n=10, champion=champion.get(t, 0.0),
                         candidate=candidate[t]) for t in candidate]  # fmt: skip
        report = RegressionReport(
            champion=parent or "base",
            candidate=v,
            rows=rows,
            champion_scores=_scores(champion),
            candidate_scores=_scores(candidate),
        )
        reg.attach(v, "metrics.json", report.model_dump_json().encode())
    return v


def test_load_matrix_follows_the_champion_lineage_and_fills_gaps_from_the_child_report(tmp_path):
    reg = Registry(LocalStore(tmp_path / "store"), "demo", actor="tester@ci")
    reg.init(BASE)
    old = ["first", "last"]
    v1 = _version(reg, None, old, old, {"first": 0.5, "last": 0.2}, {"first": 0.9, "last": 0.8})
    # v2 has no metrics.json: its row comes from v3's report, where v2 was the champion
    v2 = _version(reg, v1, ["count"], [*old, "count"], {}, {}, metrics=False)
    _rejected = _version(reg, v2, ["sum"], [*old, "count", "sum"], {"first": 0.85, "last": 0.8, "count": 0.7},
                         {"first": 0.1, "last": 0.1, "count": 0.1, "sum": 0.9})  # fmt: skip
    v4 = _version(reg, v2, ["sum"], [*old, "count", "sum"], {"first": 0.85, "last": 0.8, "count": 0.7},
                  {"first": 0.8, "last": 0.75, "count": 0.6, "sum": 0.9})  # fmt: skip
    reg.promote(v4, reason="test")

    m = load_matrix(reg)
    assert m.rows == ["base", v1, v2, v4]  # the rejected sibling is not in the champion's history
    assert m.tasks == ["first", "last", "count", "sum"]
    assert m.learned_at == [1, 1, 2, 3] and m.base_row == 0
    assert m.scores[0] == [0.5, 0.2, None, None]
    assert m.scores[1:] == [[0.9, 0.8, None, None], [0.85, 0.8, 0.7, None], [0.8, 0.75, 0.6, 0.9]]
    rep = summarize(m)
    assert rep.backward_transfer == pytest.approx(-0.25 / 3)
    assert rep.forgetting["first"] == pytest.approx(0.10)
    assert rep.drop_vs_base["first"] == pytest.approx(-0.30) and rep.drop_vs_base["count"] is None
    assert load_matrix(reg, _rejected).scores[-1] == [0.1, 0.1, 0.1, 0.9]


def test_load_matrix_without_a_champion_asks_for_a_version(tmp_path):
    reg = Registry(LocalStore(tmp_path / "store"), "demo", actor="tester@ci")
    reg.init(BASE)
    with pytest.raises(LookupError, match="no champion"):
        load_matrix(reg)
