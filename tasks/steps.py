"""One Prefect task per step of the retrain DAG. Each wraps one core call (skillgraft.steps / skillgraft.data)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel

from skillgraft import layout, steps
from skillgraft.config import SkillgraftConfig
from skillgraft.data import IngestResult, Intake
from skillgraft.evaluate import RegressionReport
from skillgraft.gate import Decision
from skillgraft.refs import BatchRef
from skillgraft.registry import Registry
from tasks import review
from tasks.events import (
    CANDIDATE_TRAINED,
    DATA_REJECTED,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    MODEL_ROLLED_BACK,
    artifact_key,
    model_resource,
)
from tasks.storage import store_for


def _transient(task, task_run, state) -> bool:
    """retry_condition_fn: retry what may pass next time (an unreachable store, a dropped connection), not what
    would fail the same way again — the registry's refusals, a bad base model or config, a missing bucket, refused
    credentials, a full disk — so the user hears of those at once instead of after two pointless retries."""
    import errno

    from skillgraft.models.load import ModelSourceError
    from skillgraft.registry import RegistryError
    from skillgraft.store.base import BucketNotFound, StoreAccessDenied

    error = state.result(raise_on_failure=False)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return False
    return not isinstance(error, (RegistryError, ModelSourceError, ValueError, BucketNotFound, StoreAccessDenied))


# Steps that touch the store retry on transient errors; training and scoring are deterministic, so they don't.
_STORE_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_transient)

GPU_SLOT_ENV = "SKILLGRAFT_GPU_SLOT"
"""Name of the Prefect global concurrency limit that guards this worker's accelerator (set by deployments/serve.py
or the worker's environment). The steps that run models on it — fine-tune and regression suite — hold one slot of
it while they run, so runs of several models sharing one GPU take turns instead of running out of its memory."""
GPU_SLOT_TIMEOUT_ENV = "SKILLGRAFT_GPU_SLOT_TIMEOUT"
"""Seconds a step waits for the slot before failing (unset: wait as long as it takes)."""


@contextmanager
def accelerator_slot(step: str) -> Iterator[None]:
    """Hold one slot of the accelerator's concurrency limit while ``step`` runs (no limit named: nothing to hold).

    The limit must exist (``strict``): a name with no limit behind it is a misconfiguration, not a licence to share
    the GPU without bounds. Raises :class:`TimeoutError` naming the slot when it stays taken past the timeout.
    """
    name = os.environ.get(GPU_SLOT_ENV)
    if not name:
        yield
        return
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError  # raised by the sync API too
    from prefect.concurrency.sync import concurrency

    raw = os.environ.get(GPU_SLOT_TIMEOUT_ENV) or None
    try:
        timeout = float(raw) if raw is not None else None
    except ValueError:
        raise ValueError(f"{GPU_SLOT_TIMEOUT_ENV}={raw!r} is not a number of seconds; unset it to wait as long as "
                         "it takes") from None  # fmt: skip
    try:
        # a lease renewal that fails mid-training (a server blip) must not kill hours of fine-tuning
        with concurrency(name, occupy=1, timeout_seconds=timeout, strict=True, raise_on_lease_renewal_failure=False):
            yield
    except ConcurrencySlotAcquisitionError as e:
        raise RuntimeError(f"{step}: {GPU_SLOT_ENV} names the concurrency limit {name!r}, which the Prefect server "
                           f"does not have ({e}); create it (`prefect gcl create {name} --limit 1`) or start the "
                           "deployments with `--gpu-slot`, which does") from e  # fmt: skip
    except TimeoutError as e:
        raise TimeoutError(f"{step}: the accelerator slot {name!r} stayed taken for {timeout:g} s (another run is "
                           f"using the GPU); nothing was trained or scored") from e  # fmt: skip


@task(name="register-model", cache_policy=NO_CACHE, **_STORE_RETRIES)
def register_model(cfg: SkillgraftConfig) -> str | None:
    """Register the model on its base (once); returns (and logs) the warning for a pretrained base with no guard."""
    from prefect import get_run_logger

    store = store_for(cfg)
    steps.ensure_model(store, cfg)
    warning = steps.unguarded_warning(store, cfg)
    if warning:
        get_run_logger().warning("%s", warning)
    return warning


@task(name="finish-interrupted", cache_policy=NO_CACHE, **_STORE_RETRIES)
def finish_interrupted(cfg: SkillgraftConfig) -> steps.Resumed:
    """Before anything is read or trained: refuse a store whose champion pointer was lost (``skillgraft repair``),
    and run the post-promotion check an interrupted run left undone (rolling back when it fails)."""
    from prefect import get_run_logger

    resumed = steps.finish_interrupted(store_for(cfg), cfg)
    for note in resumed.notes:
        get_run_logger().warning("%s", note)
    return resumed


class Ingested(BaseModel):
    """What the landing zone held: the batches accepted for training, and what was quarantined (one line each)."""

    batches: list[BatchRef]
    rejected: list[str]


@task(name="validate-and-accept", cache_policy=NO_CACHE, **_STORE_RETRIES)
def ingest(cfg: SkillgraftConfig, task_name: str | None) -> Ingested:
    """Validate every file in the landing zone (GX); accept good ones as batches, quarantine the rest."""
    intake = Intake(store_for(cfg))
    results: list[IngestResult] = intake.ingest(task_name)
    rows = []
    accepted: list[BatchRef] = []
    quarantined = [r for r in results if r.status == "quarantined"]
    for r in results:
        rows.append({"file": r.file, "task": r.task, "rule": "(outcome)", "success": r.status != "quarantined",
                     "observed": r.status, "detail": r.message})  # fmt: skip
        if r.status == "accepted" and r.batch is not None:
            accepted.append(r.batch)
        for rule in r.report.results if r.report else []:
            rows.append({"file": r.file, "task": r.task, "rule": rule.rule + (f" ({rule.column})" if rule.column else ""),
                         "success": rule.success, "observed": rule.observed, "detail": rule.detail})  # fmt: skip
    for r in quarantined:
        problems = r.report.problems[:20] if r.report else []
        emit_event(
            DATA_REJECTED, resource=model_resource(cfg.model),
            payload={"task": r.task, "file": r.file, "batch_id": r.batch_id, "where": r.location, "problems": problems},
        )  # fmt: skip
    guards = set(intake.guards())  # a guard file through the landing zone is accepted as a guard, never trained on
    accepted = [b for b in accepted if b.task not in guards]
    waiting = [b for b in steps.untrained_batches(intake.store, cfg.model, task_name) if b not in accepted]
    for b in waiting:  # accepted earlier (by `skillgraft ingest`, or a run that was interrupted), never trained on
        rows.append({"file": layout.batch_prefix(b.task, b.batch_id), "task": b.task, "rule": "(outcome)",
                     "success": True, "observed": "accepted earlier, not yet trained", "detail": ""})  # fmt: skip
    accepted += waiting
    if rows:
        create_table_artifact(rows, key=artifact_key(cfg.model, "data-validation"),
                              description=f"{len(accepted)} file(s) accepted, {len(quarantined)} rejected")  # fmt: skip
    if quarantined:
        create_markdown_artifact(review.data_rejected_markdown(quarantined), key=artifact_key(cfg.model, "data-rejected"),
                                 description=f"{len(quarantined)} file(s) rejected")  # fmt: skip
    return Ingested(batches=accepted, rejected=[r.message for r in quarantined])


@task(name="fine-tune", cache_policy=NO_CACHE)
def fine_tune(cfg: SkillgraftConfig, batches: list[BatchRef], bootstrap: bool) -> steps.CandidateInfo:
    from prefect.runtime import flow_run

    run_id = flow_run.id  # recorded in the version's manifest (lineage); None outside a flow run
    with accelerator_slot("fine-tune"):
        cand = steps.train_candidate(store_for(cfg), cfg, batches, bootstrap=bootstrap,
                                     flow_run_id=str(run_id) if run_id else None)  # fmt: skip
    # the loss curve as a PNG data URL inside the markdown: the UI renders it inline (checked in a real browser); an
    # image artifact renders it too, but prints the whole data URL beside it
    title = f"{cfg.model} {cand.candidate.version} ({cand.recipe})"
    image = review.data_url(review.loss_curve_png(cand.losses, cand.log_every, title)) if cand.losses else None
    create_markdown_artifact(
        review.training_markdown(cand, image), key=artifact_key(cfg.model, "training"),
        description=f"{cand.candidate.version}: {cand.recipe}, {cand.trainable_parameters:,} trainable, "
        f"{cand.seconds:.1f} s on {cand.device}",
    )  # fmt: skip
    record = Registry(store_for(cfg), cfg.model).manifest(cand.candidate.version).search
    if record is not None and record.rungs:
        png = review.frontier_png(record, f"{cfg.model} {cand.candidate.version}: search candidates")
        create_markdown_artifact(review.search_markdown(cand.candidate.version, record, review.data_url(png)),
                                 key=artifact_key(cfg.model, "search"),
                                 description=f"{len(record.rungs)} candidates; {record.reason}"[:200])  # fmt: skip
    emit_event(
        CANDIDATE_TRAINED, resource=model_resource(cfg.model),
        payload={"version": cand.candidate.version, "parent": cand.parent, "recipe": cand.recipe, "tasks": cand.new_tasks},
    )  # fmt: skip
    return cand


@task(name="regression-suite", cache_policy=NO_CACHE)
def regression_suite(cfg: SkillgraftConfig, cand: steps.CandidateInfo) -> RegressionReport:
    with accelerator_slot("regression-suite"):
        report = steps.evaluate_candidate(store_for(cfg), cfg, cand)
    return report  # its table artifact is published by the gate, whose checks fill the pass column


@task(name="gate", cache_policy=NO_CACHE, **_STORE_RETRIES)
def gate(cfg: SkillgraftConfig, cand: steps.CandidateInfo, report: RegressionReport) -> Decision:
    store = store_for(cfg)
    decision = steps.gate(store, cfg, cand, report)
    create_table_artifact(review.regression_table(report, decision), key=artifact_key(cfg.model, "regression"),
                          description=review.regression_summary(report, decision))  # fmt: skip
    version = cand.candidate.version
    where = layout.version_url(store.url, cfg.model, version)
    p = steps.gate_policy(store, cfg)
    policy = (f"now min_gain {p.min_gain}, max_drop {p.max_drop}, guard_max_drop {p.guard_max_drop}, max_kl {p.max_kl}, "
              f"max_bias_increase {p.max_bias_increase}")  # fmt: skip
    create_markdown_artifact(review.decision_markdown(decision, report, where, policy),
                             key=artifact_key(cfg.model, "decision"),
                             description=f"{decision.verdict} {version} (champion {decision.champion})")  # fmt: skip
    card_key = layout.version_file_key(cfg.model, version, layout.CARD)
    create_link_artifact(review.object_url(store.url, card_key), link_text=f"model card of {cfg.model} {version}",
                         key=artifact_key(cfg.model, "model-card-link"), description=f"{layout.CARD} of {version} in the store")  # fmt: skip
    create_markdown_artifact(Registry(store, cfg.model).read_attachment(version, layout.CARD).decode(),
                             key=artifact_key(cfg.model, "model-card"), description=f"Model card of {version}")  # fmt: skip
    return decision


@task(name="promote", cache_policy=NO_CACHE, **_STORE_RETRIES)
def promote(cfg: SkillgraftConfig, cand: steps.CandidateInfo, decision: Decision) -> steps.PromotionResult:
    result = steps.promote(store_for(cfg), cfg, cand, decision)
    if result.promoted:
        emit_event(MODEL_PROMOTED, resource=model_resource(cfg.model),
                   payload={"version": result.champion, "previous": result.previous, "reasons": decision.reasons})  # fmt: skip
    else:
        create_markdown_artifact(review.superseded_markdown(result.reason), key=artifact_key(cfg.model, "decision"),
                                 description=f"{cand.candidate.version} superseded")  # fmt: skip
    return result


@task(name="reject", cache_policy=NO_CACHE, **_STORE_RETRIES)
def reject(cfg: SkillgraftConfig, cand: steps.CandidateInfo, decision: Decision) -> None:
    steps.reject(store_for(cfg), cfg, cand, decision)
    emit_event(MODEL_REJECTED, resource=model_resource(cfg.model),
               payload={"version": cand.candidate.version, "champion": decision.champion, "reasons": decision.reasons})  # fmt: skip


@task(name="post-promotion-check", cache_policy=NO_CACHE)
def post_promotion_check(cfg: SkillgraftConfig, version: str, previous: str | None) -> steps.CheckResult:
    store = store_for(cfg)
    check = steps.post_promotion_check(store, cfg, version)
    steps.record_check(store, cfg, check)  # logged either way: a champion with no check entry is flagged by status
    create_markdown_artifact(review.post_check_markdown(check, previous), key=artifact_key(cfg.model, "post-check"),
                             description=f"Post-promotion check of {version}: {'passed' if check.ok else 'FAILED'}")  # fmt: skip
    return check


@task(name="rollback", cache_policy=NO_CACHE, **_STORE_RETRIES)
def rollback(cfg: SkillgraftConfig, check: steps.CheckResult, to: str) -> str:
    pointer = steps.auto_rollback(store_for(cfg), cfg, check, to)
    reason = pointer.reason
    emit_event(MODEL_ROLLED_BACK, resource=model_resource(cfg.model),
               payload={"from": check.version, "to": pointer.version, "reason": reason})  # fmt: skip
    create_markdown_artifact(review.rollback_markdown(check.version, pointer.version, reason, cfg.model),
                             key=artifact_key(cfg.model, "rollback"), description=f"{check.version} rolled back")  # fmt: skip
    return pointer.version
