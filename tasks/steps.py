"""One Prefect task per step of the retrain DAG. Each wraps one core call (skillgraft.steps / skillgraft.data)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from skillgraft import steps
from skillgraft.config import SkillgraftConfig
from skillgraft.data import Intake, IngestResult
from skillgraft.evaluate import RegressionReport
from skillgraft.gate import Decision
from skillgraft.refs import BatchRef
from skillgraft.store import open_store
from tasks.events import (
    CANDIDATE_TRAINED,
    DATA_REJECTED,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    MODEL_ROLLED_BACK,
    artifact_key,
    model_resource,
)

# Steps that touch the store retry on transient errors; training and scoring are deterministic, so they don't.
_STORE_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10])


@task(name="register-model", cache_policy=NO_CACHE, **_STORE_RETRIES)
def register_model(cfg: SkillgraftConfig) -> None:
    steps.ensure_model(open_store(cfg.store), cfg)


@task(name="validate-and-accept", cache_policy=NO_CACHE, **_STORE_RETRIES)
def ingest(cfg: SkillgraftConfig, task_name: str | None) -> list[BatchRef]:
    """Validate every file in the landing zone (GX); accept good ones as batches, quarantine the rest."""
    intake = Intake(open_store(cfg.store))
    results: list[IngestResult] = intake.ingest(task_name)
    rows = []
    accepted: list[BatchRef] = []
    for r in results:
        rows.append({"file": r.file, "task": r.task, "rule": "(outcome)", "success": r.status != "quarantined",
                     "observed": r.status, "detail": r.message})  # fmt: skip
        if r.status == "accepted" and r.batch is not None:
            accepted.append(r.batch)
        if r.status == "quarantined":
            problems = r.report.problems[:20] if r.report else []
            emit_event(
                DATA_REJECTED, resource=model_resource(cfg.model),
                payload={"task": r.task, "file": r.file, "batch_id": r.batch_id, "where": r.location, "problems": problems},
            )  # fmt: skip
        for rule in r.report.results if r.report else []:
            rows.append({"file": r.file, "task": r.task, "rule": rule.rule + (f" ({rule.column})" if rule.column else ""),
                         "success": rule.success, "observed": rule.observed, "detail": rule.detail})  # fmt: skip
    if rows:
        create_table_artifact(rows, key=artifact_key(cfg.model, "data-validation"), description="Data validation")
    return accepted


@task(name="fine-tune", cache_policy=NO_CACHE)
def fine_tune(cfg: SkillgraftConfig, batches: list[BatchRef], bootstrap: bool) -> steps.CandidateInfo:
    cand = steps.train_candidate(open_store(cfg.store), cfg, batches, bootstrap=bootstrap)
    curve = ", ".join(f"{x:.3f}" for x in cand.losses)
    create_markdown_artifact(
        f"## Training {cand.candidate}\n\n| | |\n|---|---|\n| recipe | `{cand.recipe}` |\n"
        f"| trainable parameters | {cand.trainable_parameters:,} of {cand.total_parameters:,} "
        f"({100 * cand.trainable_parameters / max(1, cand.total_parameters):.2f}%) |\n"
        f"| time | {cand.seconds:.1f} s on {cand.device} |\n| parent | {steps.label(cand.parent)} |\n"
        f"| tasks taught | {', '.join(cand.new_tasks)} |\n\nLoss every {cand.log_every} steps: {curve}\n",
        key=artifact_key(cfg.model, "training"),
        description="Training summary",
    )
    emit_event(
        CANDIDATE_TRAINED, resource=model_resource(cfg.model),
        payload={"version": cand.candidate.version, "parent": cand.parent, "recipe": cand.recipe, "tasks": cand.new_tasks},
    )  # fmt: skip
    return cand


@task(name="regression-suite", cache_policy=NO_CACHE)
def regression_suite(cfg: SkillgraftConfig, cand: steps.CandidateInfo) -> RegressionReport:
    report = steps.evaluate_candidate(open_store(cfg.store), cfg, cand)
    limit = cfg.gate.max_drop
    table = [
        {
            "task": r.task, "kind": "new" if r.new else "old", "n": r.n, "champion": round(r.champion, 4),
            "candidate": round(r.candidate, 4), "delta": round(r.delta, 4),
            "pass": (r.delta >= (cfg.gate.min_gain or 0)) if r.new else (limit is not None and -r.delta <= limit),
        }
        for r in report.rows
    ]  # fmt: skip
    create_table_artifact(table, key=artifact_key(cfg.model, "regression"),
                          description=f"Regression suite: {report.candidate} vs {report.champion}")  # fmt: skip
    return report


@task(name="gate", cache_policy=NO_CACHE, **_STORE_RETRIES)
def gate(cfg: SkillgraftConfig, cand: steps.CandidateInfo, report: RegressionReport) -> Decision:
    decision = steps.gate(open_store(cfg.store), cfg, cand, report)
    where = steps.version_location(open_store(cfg.store), cfg.model, cand.candidate.version)
    create_markdown_artifact(
        f"# Decision: {decision.verdict}\n\n{decision.markdown()}\n\n## Regression suite\n\n{report.markdown()}\n\n"
        f"Version stored at `{where}`\n",
        key=artifact_key(cfg.model, "decision"),
        description=f"Gate decision for {cand.candidate}",
    )
    return decision


@task(name="promote", cache_policy=NO_CACHE, **_STORE_RETRIES)
def promote(cfg: SkillgraftConfig, cand: steps.CandidateInfo, decision: Decision) -> steps.PromotionResult:
    result = steps.promote(open_store(cfg.store), cfg, cand, decision)
    if result.promoted:
        emit_event(MODEL_PROMOTED, resource=model_resource(cfg.model),
                   payload={"version": result.champion, "previous": result.previous, "reasons": decision.reasons})  # fmt: skip
    else:
        create_markdown_artifact(f"# Superseded\n\n{result.reason}\n", key=artifact_key(cfg.model, "decision"))
    return result


@task(name="reject", cache_policy=NO_CACHE, **_STORE_RETRIES)
def reject(cfg: SkillgraftConfig, cand: steps.CandidateInfo, decision: Decision) -> None:
    steps.reject(open_store(cfg.store), cfg, cand, decision)
    emit_event(MODEL_REJECTED, resource=model_resource(cfg.model),
               payload={"version": cand.candidate.version, "champion": decision.champion, "reasons": decision.reasons})  # fmt: skip


@task(name="post-promotion-check", cache_policy=NO_CACHE)
def post_promotion_check(cfg: SkillgraftConfig, version: str) -> steps.CheckResult:
    return steps.post_promotion_check(open_store(cfg.store), cfg, version)


@task(name="rollback", cache_policy=NO_CACHE, **_STORE_RETRIES)
def rollback(cfg: SkillgraftConfig, check: steps.CheckResult, to: str) -> str:
    pointer = steps.auto_rollback(open_store(cfg.store), cfg, check, to)
    reason = pointer.reason
    emit_event(MODEL_ROLLED_BACK, resource=model_resource(cfg.model),
               payload={"from": check.version, "to": pointer.version, "reason": reason})  # fmt: skip
    create_markdown_artifact(
        f"# Rolled back\n\n{reason}\n\nChampion is {pointer.version} again. Inspect the failed version with "
        f"`skillgraft status --model {cfg.model}`; nothing was deleted.\n",
        key=artifact_key(cfg.model, "rollback"),
    )
    return pointer.version
