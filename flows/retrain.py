"""The retrain flow — read it top-down as the pipeline:

validate & accept new data → fine-tune the champion (recipe) → regression suite (every task, champion vs candidate)
→ gate → promote (conditional pointer move) → post-promotion check → automatic rollback on failure; or reject.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel

from skillgraft.config import load_config
from skillgraft.evaluate import RegressionReport
from skillgraft.gate import Decision
from tasks import steps as t


class RetrainOutcome(BaseModel):
    model: str
    status: str  # promoted | rejected | rolled-back | superseded | no-new-data
    candidate: str | None = None
    champion: str | None = None
    decision: Decision | None = None
    report: RegressionReport | None = None
    notes: list[str] = []


def _run_name() -> str:
    p = flow_run.parameters
    return f"{p.get('model') or 'model'}-{p.get('task') or 'incoming'}{'-bootstrap' if p.get('bootstrap') else ''}"


@flow(name="retrain", flow_run_name=_run_name, log_prints=True)
def retrain(
    model: str | None = None,
    task: str | None = None,
    store: str | None = None,
    recipe: str | None = None,
    config: str | None = None,
    bootstrap: bool = False,
) -> RetrainOutcome:
    """Teach ``model`` the data waiting in its landing zone (``task``: only that task) without forgetting the rest."""
    cfg = load_config(config, store=store, model=model, recipe=recipe)
    t.register_model(cfg)
    batches = t.ingest(cfg, task)
    if not batches:
        return RetrainOutcome(model=cfg.model, status="no-new-data", notes=["no new valid data in the landing zone"])
    cand = t.fine_tune(cfg, batches, bootstrap)
    report = t.regression_suite(cfg, cand)
    decision = t.gate(cfg, cand, report)
    out = RetrainOutcome(model=cfg.model, status="rejected", candidate=cand.candidate.version, decision=decision, report=report)
    if not decision.promote:
        t.reject(cfg, cand, decision)
        out.champion = cand.parent
        return out
    promoted = t.promote(cfg, cand, decision)
    out.champion = promoted.champion
    if not promoted.promoted:
        out.status, out.notes = "superseded", [promoted.reason]
        return out
    check = t.post_promotion_check(cfg, cand.candidate.version)
    if not check.ok and promoted.previous is None:
        out.status, out.notes = "check-failed", [*check.reasons, "no earlier champion to roll back to"]
        return out
    if not check.ok:
        out.champion = t.rollback(cfg, check, promoted.previous)
        out.status, out.notes = "rolled-back", check.reasons
        return out
    out.status = "promoted"
    return out
