"""The retrain flow — read ``teach`` top-down as the pipeline:

validate & accept new data → fine-tune the champion (recipe) → regression suite (every task, champion vs candidate)
→ gate → promote (conditional pointer move) → post-promotion check → automatic rollback on failure; or reject.

``retrain`` is the Prefect entry point (deployments, CLI): it loads the config, runs ``teach`` and names the run
after what happened (``demo-count-promoted``), so the UI's run list tells the story without opening a run.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed
from pydantic import BaseModel

from skillgraft.config import SkillgraftConfig, load_config
from skillgraft.evaluate import RegressionReport
from skillgraft.gate import Decision
from skillgraft.promotion import promote_checked
from tasks import review
from tasks import steps as t


class RetrainOutcome(BaseModel):
    model: str
    status: str  # promoted | rejected | rolled-back | rollback-skipped | superseded | check-failed | no-new-data | data-rejected
    candidate: str | None = None
    champion: str | None = None
    decision: Decision | None = None
    report: RegressionReport | None = None
    notes: list[str] = []
    tasks: list[str] = []  # the tasks this run taught (empty when nothing was trained)


def _run_name() -> str:
    p = flow_run.parameters
    return f"{p.get('model') or 'model'}-{p.get('task') or 'incoming'}{'-bootstrap' if p.get('bootstrap') else ''}"


def _name_failed_run(flow, run, state) -> None:
    """on_failure / on_crashed: say so in the run's name too."""
    review.rename_flow_run(f"{run.name}-{'crashed' if state.is_crashed() else 'failed'}")


@flow(
    name="retrain",
    flow_run_name=_run_name,
    log_prints=True,
    on_failure=[_name_failed_run],
    on_crashed=[_name_failed_run],
)
def retrain(
    model: str | None = None,
    task: str | None = None,
    store: str | None = None,
    recipe: str | None = None,
    config: str | None = None,
    bootstrap: bool = False,
    base: str | None = None,
    revision: str | None = None,
    snapshot_base: bool | None = None,
) -> RetrainOutcome:
    """Teach ``model`` the data waiting in its landing zone (``task``: only that task) without forgetting the rest.

    ``base`` (like ``base:`` in the config) registers a new model on that base; for a registered model it must be
    the base it was registered on, else the run stops before anything is read or trained. ``revision`` pins a hub
    base; ``snapshot_base`` copies a new model's base weights into the store.
    """
    cfg = load_config(config, store=store, model=model, recipe=recipe, base=base, revision=revision,
                      snapshot_base=snapshot_base)  # fmt: skip
    task = task or None  # "" (a form, a shell variable) means every task, like None
    outcome = teach(cfg, task, bootstrap)
    review.rename_flow_run(review.run_name(cfg.model, task, outcome.tasks, outcome.status))
    champion = f": champion of {cfg.model} is {outcome.champion}" if outcome.champion else ""
    print(outcome.status + champion + "".join(f"\n- {note}" for note in outcome.notes))
    # a named Completed state: the run list tells a promotion from a rejection without opening the run; calling
    # retrain() still returns the RetrainOutcome (Prefect hands back the state's data)
    return Completed(name=state_name(outcome.status), message=outcome.status + champion, data=outcome)


def state_name(status: str) -> str:
    """``rolled-back`` → ``RolledBack``: the outcome as a Prefect state name."""
    return "".join(part.capitalize() for part in status.split("-"))


def teach(cfg: SkillgraftConfig, task: str | None, bootstrap: bool) -> RetrainOutcome:
    unguarded = t.register_model(cfg)
    resumed = t.finish_interrupted(cfg)
    if unguarded:
        resumed.notes.insert(
            0, f"WARNING: {unguarded}"
        )  # a lost champion pointer stops here; an unchecked champion is checked first
    if resumed.stop:
        return RetrainOutcome(model=cfg.model, status="check-failed", champion=resumed.champion, notes=resumed.notes)
    data = t.ingest(cfg, task)
    if not data.batches:
        status = "data-rejected" if data.rejected else "no-new-data"
        return RetrainOutcome(model=cfg.model, status=status, champion=resumed.champion,
                              notes=[*resumed.notes, *(data.rejected or ["no new valid data in the landing zone"])])  # fmt: skip
    cand = t.fine_tune(cfg, data.batches, bootstrap)
    report = t.regression_suite(cfg, cand)
    decision = t.gate(cfg, cand, report)
    out = RetrainOutcome(model=cfg.model, status="rejected", candidate=cand.candidate.version, decision=decision,
                         report=report, tasks=cand.new_tasks, notes=[*resumed.notes, *data.rejected])  # fmt: skip
    if not decision.promote:
        t.reject(cfg, cand, decision)
        out.champion = cand.parent
        return out
    settled = promote_checked(
        cand.candidate.version,
        lambda: t.promote(cfg, cand, decision),
        lambda version, previous: t.post_promotion_check(cfg, version, previous),
        lambda check, to: t.rollback(cfg, check, to),
    )
    out.status, out.champion = settled.status, settled.champion
    if settled.notes:
        out.notes = settled.notes
    return out
