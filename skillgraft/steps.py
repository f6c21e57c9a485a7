"""The retrain DAG's steps as plain functions over a store: what the Prefect tasks in ``tasks/`` wrap, one call each.

Every step takes and returns small typed references (BatchRef, VersionRef, RegressionReport, Decision); models are
loaded from the store inside the step that needs them, so a step can run in another process (or on a GPU worker).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from skillgraft import demo, layout
from skillgraft.config import SkillgraftConfig
from skillgraft.data import Example, Intake
from skillgraft.evaluate import EvalTask, RegressionReport, run_suite, score_task
from skillgraft.gate import Decision, decide
from skillgraft.lineage import parent_name, software_versions
from skillgraft.models import (
    LoadedModel,
    apply_deltas,
    delta_from_bytes,
    delta_to_bytes,
    extract_delta,
    load_model,
    load_snapshot,
    snapshot_files,
    state_dict_sha256,
)
from skillgraft.promotion import CheckResult, PromotionResult, settle
from skillgraft.recipes import LoRA, take_adapter
from skillgraft.refs import AdapterRef, BaseRef, BatchRef, Manifest, VersionRef
from skillgraft.registry import BaseMismatch, ChampionPointer, PromotionConflict, Registry
from skillgraft.store import ObjectStore
from skillgraft.train import fine_tune, mix_replay
from skillgraft.vision import ImageExample

log = logging.getLogger(__name__)

DELTA_FILE = layout.DELTA
BUILTIN_DEMO = "builtin:demo-llama"


# --- models in the store -------------------------------------------------------------------------------------------


def resolve_base(source: str, gguf_file: str | None = None, trust_remote_code: bool = False, *,
                 revision: str | None = None) -> LoadedModel:  # fmt: skip
    """The base model from a hub id (at ``revision``), a local directory, a GGUF file, or the built-in demo model."""
    if source == BUILTIN_DEMO:
        tokenizer = demo.build_tokenizer()
        model = demo.build_model(tokenizer)
        return LoadedModel(model=model, tokenizer=tokenizer, source=source, model_type=model.config.model_type)
    if source.startswith("builtin:"):
        raise ValueError(f"unknown built-in model {source!r}; built-in: {BUILTIN_DEMO}")
    if revision is not None:
        return load_model(source, gguf_file=gguf_file, trust_remote_code=trust_remote_code, revision=revision)
    return load_model(source, gguf_file=gguf_file, trust_remote_code=trust_remote_code)


def base_source(source: str) -> str:
    """A base as it is registered: a local path made absolute (so a run from another directory finds it again)."""
    if source.startswith("builtin:"):
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def check_base(store: ObjectStore, cfg: SkillgraftConfig):
    """The registered model's info (None for a new model); :class:`BaseMismatch` if the config asks for another base."""
    info = Registry(store, cfg.model).info()
    if info is not None and "revision" in cfg.model_fields_set and cfg.revision != info.base.revision:
        raise BaseMismatch(
            f"model {cfg.model!r} in {store.url} is registered on {info.base.source} at revision "
            f"{info.base.revision or '(none: the default branch)'}, but this run asks for revision {cfg.revision}. "
            f"Nothing was submitted or trained. Register a new model (--model NAME) for another revision."
        )
    if info is not None and "base" in cfg.model_fields_set and base_source(cfg.base) != info.base.source:
        raise BaseMismatch(
            f"model {cfg.model!r} in {store.url} is registered on base {info.base.source}, but this run asks for base "
            f"{base_source(cfg.base)}. Nothing was submitted or trained. Leave the base out to keep training "
            f"{cfg.model!r}, or register a new model on that base with --model NAME."
        )
    return info


def ensure_model(store: ObjectStore, cfg: SkillgraftConfig) -> BaseRef:
    """Register ``cfg.model`` on its base (once). A built-in base is snapshotted into the store.

    Raises :class:`BaseMismatch` when the config or the caller *set* a base (``cfg.model_fields_set``) that is not
    the one the model is registered on; an unset base means "the registered one".
    """
    reg = Registry(store, cfg.model)
    info = check_base(store, cfg)
    source = base_source(cfg.base)
    if info is not None:
        return info.base
    loaded = resolve_base(source, cfg.gguf_file, cfg.trust_remote_code, revision=cfg.revision)
    snapshot = source.startswith("builtin:") or cfg.snapshot_base
    base = BaseRef(
        source=source, sha256=state_dict_sha256(loaded.model), model_type=loaded.model_type,
        gguf_file=cfg.gguf_file, snapshot=snapshot, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision,
    )  # fmt: skip
    if snapshot:
        for name, data in snapshot_files(loaded.model, loaded.tokenizer).items():
            reg.put_base_file(name, data)
    reg.init(base)
    return base


def load_base(reg: Registry) -> LoadedModel:
    info = reg.info()
    if info is None:
        raise LookupError(f"model {reg.model!r} is not registered in {reg.store.url}; run `skillgraft run` or `demo`")
    base = info.base
    if base.snapshot:
        prefix = layout.base_prefix(reg.model)
        files = {key[len(prefix) :]: reg.store.get(key) for key in reg.store.keys(prefix)}
        loaded = load_snapshot(files)
    else:
        loaded = resolve_base(base.source, base.gguf_file, base.trust_remote_code, revision=base.revision)
    got = state_dict_sha256(loaded.model)
    if got != base.sha256:
        raise BaseMismatch(
            f"base of model {reg.model!r} ({base.source}) hashes to {got[:12]}…, but its versions were trained on "
            f"{base.sha256[:12]}…: the base weights changed; pin the exact base revision"
        )
    return loaded


def chain(reg: Registry, version: str | None) -> list[str]:
    """Versions from the first one after the base to ``version`` (each version's delta is on its parent)."""
    out: list[str] = []
    while version is not None:
        out.append(version)
        version = reg.manifest(version).parent
    return out[::-1]


def load_version(reg: Registry, version: str | None) -> LoadedModel:
    """Base + the delta chain up to ``version`` (None: the base). Every file's checksum is verified on read."""
    loaded = load_base(reg)
    deltas = [delta_from_bytes(reg.read_file(v, DELTA_FILE))[0] for v in chain(reg, version)]
    apply_deltas(loaded.model, deltas)
    loaded.model.eval()
    return loaded


def label(version: str | None) -> str:
    return version or "base"


def untrained_batches(store: ObjectStore, model: str, task: str | None = None) -> list[BatchRef]:
    """Accepted batches no version of ``model`` was trained on (e.g. accepted by a run that was then interrupted).

    A batch a rejected candidate was trained on counts as used: re-teach it with a new batch or a forced promote.
    A batch only *ungated* versions were trained on (complete, but their run stopped before the gate: no decision,
    no history entry) counts as not used, so the next run trains on it again instead of stranding it.
    """
    reg = Registry(store, model)
    used = {(b.task, b.batch_id) for v in reg.versions() if v.status == "complete" and v.gated
            for b in reg.manifest(v.version).batches}  # fmt: skip
    intake = Intake(store)
    guards = set(intake.guards())  # guard sets are scored, never trained on
    tasks = [t for t in ([task] if task else intake.tasks()) if t not in guards]
    return [b for t in tasks for b in intake.batches(t) if (b.task, b.batch_id) not in used]


# --- the DAG's steps -----------------------------------------------------------------------------------------------


class CandidateInfo(BaseModel):
    candidate: VersionRef
    parent: str | None
    champion_etag: str | None
    new_tasks: list[str]
    known_tasks: list[str]
    trainable_parameters: int
    total_parameters: int
    seconds: float
    device: str
    recipe: str
    losses: list[float]
    log_every: int


def train_candidate(
    store: ObjectStore, cfg: SkillgraftConfig, batches: list[BatchRef], *, bootstrap: bool = False,
    flow_run_id: str | None = None,
) -> CandidateInfo:  # fmt: skip
    """Fine-tune the champion (or the bare base) on ``batches`` and store the result as a new version.

    ``bootstrap`` uses ``cfg.bootstrap_recipe`` / ``bootstrap_train`` (teaching a bare base its first tasks).
    ``flow_run_id``: the Prefect flow run doing this, recorded in the manifest. A lora version also stores its PEFT
    adapter (captured before the merge, relative to the parent's weights) beside the merged delta.
    """
    if not batches:
        raise ValueError("no accepted batches to train on")
    reg = Registry(store, cfg.model)
    intake = Intake(store)
    pointer, etag = reg.champion_with_etag()
    parent = pointer.version if pointer else None
    known = reg.manifest(parent).tasks if parent else []
    new_tasks = sorted({b.task for b in batches})
    loaded = load_version(reg, parent)
    parent_state = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
    train = [ex for b in batches for ex in with_images(intake, b.task, intake.load_split(b, "train"))]
    old = [ex for t in known if t not in new_tasks for b in intake.batches(t)
           for ex in with_images(intake, t, intake.load_split(b, "train"))]  # fmt: skip
    recipe = cfg.bootstrap_recipe if bootstrap else cfg.recipe
    tcfg = cfg.bootstrap_train if bootstrap else cfg.train
    mix = mix_replay(train, old, 0.0 if bootstrap else cfg.replay, tcfg.seed)
    log.info("training %s on %d examples (%d new, %d replayed) with recipe %s", cfg.model, len(mix), len(train),
             len(mix) - len(train), recipe.kind)  # fmt: skip
    guards = [] if bootstrap else guard_tasks(store, cfg)
    watch = tcfg.drift_watch  # drift watch: probe on old-task and guard prompts spread over every old task and guard
    searching = not bootstrap and search_active(store, cfg)
    if watch is not None or searching:
        pool = old + [ex for g in guards if g.scorer is None for ex in g.examples]
        wanted = watch.prompts if watch is not None else cfg.suite.probe_prompts
        spread = pool[:: max(1, len(pool) // max(1, wanted))][: max(1, wanted)] if pool else []
    else:
        spread = []
    probe = [ex if isinstance(ex, ImageExample) else ex.prompt for ex in spread]  # image prompts keep their image
    search_record = None
    if searching:
        from skillgraft import search as s

        policy = gate_policy(store, cfg)
        spec = intake.task_spec(new_tasks[0])
        checks = suite_tasks(store, [t for t in known if t not in new_tasks], [], cfg.suite.max_eval_examples)
        checks += [g for g in guards if not g.probe_only]
        model, search_record, record = s.run(
            loaded.model, loaded.tokenizer, parent_state, train_examples=train, replay=old, checks=checks,
            new_task=EvalTask(name=spec.name, metric=spec.metric, max_new_tokens=spec.max_new_tokens, examples=[]),
            probe_prompts=probe, search=cfg.search, recipe=recipe, train_cfg=tcfg, replay_fraction=cfg.replay,
            eval_batch_size=cfg.suite.eval_batch_size, policy=policy,
        )  # fmt: skip
        log.info("%s", search_record.reason)
    else:
        tuned = fine_tune(loaded.model, loaded.tokenizer, mix, recipe, tcfg, probe_prompts=probe, new_examples=train)
        log.info("%s", tuned.selection.summary())
        model, record = tuned.model, tuned.record
    adapter = take_adapter(model)  # the LoRA adapter finish() merged (None for other recipes)
    delta = extract_delta(parent_state, model.state_dict())
    info = reg.info()
    manifest = Manifest(
        model=cfg.model, version="pending", parent=parent, base=info.base, recipe=recipe.model_dump(mode="json"),
        batches=batches, tasks=sorted(set(known) | set(new_tasks)), training=record, search=search_record,
        flow_run_id=flow_run_id, software=software_versions(),
    )  # fmt: skip
    files = {DELTA_FILE: delta_to_bytes(delta, {"parent": label(parent), "recipe": recipe.kind})}
    if adapter is not None and isinstance(recipe, LoRA):
        applies_to = parent_name(manifest)
        strength = search_record.rungs[search_record.chosen].alpha if search_record is not None else 1.0
        files.update(adapter.files(applies_to=applies_to, revision=info.base.revision if parent is None else None))
        manifest.adapter = AdapterRef(files=list(layout.ADAPTER_FILES), applies_to=label(parent),
                                      base_model_name_or_path=applies_to, strength=strength)  # fmt: skip
    ref = reg.create_version(files, manifest)
    r = record
    return CandidateInfo(
        candidate=ref, parent=parent, champion_etag=etag, new_tasks=new_tasks, known_tasks=manifest.tasks,
        trainable_parameters=r.trainable_parameters, total_parameters=r.total_parameters, seconds=r.seconds,
        device=r.device, recipe=recipe.kind, losses=r.losses, log_every=tcfg.log_every,
    )  # fmt: skip


def with_images(intake: Intake, task: str, examples: list) -> list:
    """``examples`` with every one that references an image made an :class:`ImageExample` holding the image file's
    bytes (read from the task's content-addressed images, checked against its sha256; decoded when used)."""
    return [ImageExample(ex.prompt, ex.answer, intake.load_image(task, ex.image), ex.image)
            if ex.image is not None else ex for ex in examples]  # fmt: skip


def suite_tasks(store: ObjectStore, tasks: list[str], new_tasks: list[str], cap: int | None) -> list[EvalTask]:
    intake = Intake(store)
    out = []
    for t in tasks:
        spec = intake.task_spec(t)
        examples = with_images(intake, t, intake.eval_set(t)[:cap] if cap else intake.eval_set(t))
        out.append(EvalTask(name=t, metric=spec.metric, max_new_tokens=spec.max_new_tokens,
                            examples=examples[:cap] if cap else examples, new=t in new_tasks))  # fmt: skip
    return out


PRETRAINED_DRIFT_LIMITS = {"max_kl": 0.5, "max_bias_increase": 0.05}
"""Drift limits the gate applies on a pretrained base unless the config sets them (``null`` turns one off). Chosen on
the Gemma 3 270M benchmark (benchmarks/results/recipes_gemma.md): every candidate there that kept all old skills had
KL ≤ 0.31 nats and a number-mass rise ≤ 0.025; every one that lost a skill had KL ≥ 1.0 or a rise ≥ 0.08."""


def unguarded_warning(store: ObjectStore, cfg: SkillgraftConfig) -> str | None:
    """The loud warning for a pretrained base with no guard: nothing would stop a candidate that lost what it knew."""
    from skillgraft.guards import read_guards

    if not is_pretrained(store, cfg) or read_guards(store, cfg.model).guards:
        return None
    return (f"model {cfg.model!r} is a pretrained base with no guard: the regression suite checks only the tasks "
            f"skillgraft taught it, so NOTHING protects what the base already knew (a candidate that forgot it all "
            f"would pass). Add a held-out set of what it must keep: `skillgraft guard add NAME FILE...` (your "
            f"prompt/answer rows) or `skillgraft guard add NAME --lm-eval arc_easy` (see README: Teaching a model "
            f"you already use)")  # fmt: skip


def search_active(store: ObjectStore, cfg: SkillgraftConfig) -> bool:
    """Whether the fine-tune searches for its learning rate and strength (skillgraft.search)."""
    from skillgraft.search import active

    return active(cfg.search, set(cfg.train.model_fields_set), is_pretrained(store, cfg))


def is_pretrained(store: ObjectStore, cfg: SkillgraftConfig) -> bool:
    """A base that arrived knowing things (anything but the built-in demo model, which starts from random weights)."""
    info = Registry(store, cfg.model).info()
    return not (info.base.source if info is not None else cfg.base).startswith("builtin:")


def gate_policy(store: ObjectStore, cfg: SkillgraftConfig):
    """The policy the gate applies: the config's, with :data:`PRETRAINED_DRIFT_LIMITS` for a pretrained base where
    the config does not set those limits itself."""
    policy = cfg.gate
    if not is_pretrained(store, cfg):
        return policy
    return policy.model_copy(
        update={k: v for k, v in PRETRAINED_DRIFT_LIMITS.items() if k not in policy.model_fields_set}
    )


def guard_tasks(store: ObjectStore, cfg: SkillgraftConfig) -> list[EvalTask]:
    """One suite entry per guard of ``cfg.model`` (skillgraft.guards): data guards from the intake, lm-eval guards
    scored through lm-eval itself."""
    from skillgraft.guards import read_guards

    intake = Intake(store)
    cap = cfg.suite.max_eval_examples
    out = []
    for g in read_guards(store, cfg.model).guards:
        if g.kind == "lm-eval":
            _same_lm_eval_task(g)
            out.append(EvalTask(name=g.name, metric=g.lm_eval.metric, max_new_tokens=0, examples=[], guard=True,
                                tolerance=g.tolerance, scorer=_lm_eval_scorer(g, cfg)))  # fmt: skip
            continue
        if g.kind == "prompts":
            from skillgraft.guards import load_probe_prompts

            prompts = [Example(prompt=p, answer="") for p in load_probe_prompts(store, cfg.model, g)]
            out.append(
                EvalTask(name=g.name, metric="none", max_new_tokens=0, examples=prompts, guard=True, probe_only=True)
            )
            continue
        spec = intake.task_spec(g.name)
        examples = with_images(intake, g.name, intake.eval_set(g.name)[:cap] if cap else intake.eval_set(g.name))
        out.append(EvalTask(name=g.name, metric=spec.metric, max_new_tokens=spec.max_new_tokens, examples=examples,
                            guard=True, tolerance=g.tolerance))  # fmt: skip
    return out


def _same_lm_eval_task(g) -> None:
    """An lm-eval guard scores the task as it was when added: a task whose config changed since is refused."""
    from skillgraft.guards import GuardError
    from skillgraft.lm_eval_guard import describe_task

    now = describe_task(g.lm_eval.task, include_path=g.lm_eval.include_path)["config_sha256"]
    if now != g.lm_eval.config_sha256:
        raise GuardError(
            f"guard {g.name!r}: lm-eval task {g.lm_eval.task} changed since the guard was added (config sha256 "
            f"{g.lm_eval.config_sha256[:12]}… then, {now[:12]}… now), so its scores no longer compare; remove the guard "
            f"and add it again (`skillgraft guard remove {g.name}`, then `guard add {g.name} --lm-eval …`)"
        )


def _lm_eval_scorer(g, cfg: SkillgraftConfig):
    source = g.lm_eval

    def scorer(model, tokenizer):
        from skillgraft.lm_eval_guard import score

        found = score(model, tokenizer, source.task, include_path=source.include_path, limit=source.limit,
                      batch_size=min(cfg.suite.eval_batch_size, 16))  # fmt: skip
        return found.model_copy(update={"task": g.name})

    return scorer


def _with_base_scores(store: ObjectStore, cfg: SkillgraftConfig, guards: list[EvalTask], parent: str | None) -> None:
    """Fill each guard's score on the bare base, from the store's cache; scores the base on the ones missing (once:
    a guard added after the first version). Nothing to do when the parent is the base itself."""
    from skillgraft.guards import read_base_score, read_guards

    if parent is None or not guards:
        return
    reg = Registry(store, cfg.model)
    info = reg.info()
    entries = {g.name: g for g in read_guards(store, cfg.model).guards}
    missing = []
    for t in (t for t in guards if not t.probe_only):
        found = read_base_score(store, cfg.model, entries[t.name], info.base.sha256)
        if found is not None:
            t.base = found.score
        else:
            missing.append(t)
    if not missing:
        return
    base = load_version(reg, None)
    base.model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    for t in missing:
        got = (
            t.scorer(base.model, base.tokenizer)
            if t.scorer
            else score_task(base.model, base.tokenizer, t, cfg.suite.eval_batch_size)
        )
        t.base = got.score
        _remember_base(store, cfg, entries[t.name], got, info.base.sha256)


def _remember_base(store: ObjectStore, cfg: SkillgraftConfig, entry, got, base_sha256: str) -> None:
    from skillgraft.guards import BaseScore, content_sha256, write_base_score

    write_base_score(store, cfg.model, BaseScore(guard=entry.name, base_sha256=base_sha256, metric=got.metric,
                                                 content_sha256=content_sha256(store, entry), score=got.score, n=got.n))  # fmt: skip


def evaluate_candidate(store: ObjectStore, cfg: SkillgraftConfig, cand: CandidateInfo) -> RegressionReport:
    """Score the candidate and its parent (the champion it was trained from) on every task and every guard of the
    model; store metrics.json."""
    reg = Registry(store, cfg.model)
    champion = load_version(reg, cand.parent)
    candidate = load_version(reg, cand.candidate.version)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    champion.model.to(device)
    candidate.model.to(device)
    guards = guard_tasks(store, cfg)
    _with_base_scores(store, cfg, guards, cand.parent)
    tasks = suite_tasks(store, cand.known_tasks, cand.new_tasks, cfg.suite.max_eval_examples) + guards
    report = run_suite(
        champion.model, candidate.model, candidate.tokenizer, tasks, champion_label=label(cand.parent),
        candidate_label=cand.candidate.version, probe_prompts=cfg.suite.probe_prompts,
        batch_size=cfg.suite.eval_batch_size,
    )  # fmt: skip
    if cand.parent is None and guards:  # the champion is the bare base: its guard scores are the base's
        from skillgraft.guards import read_guards

        entries = {g.name: g for g in read_guards(store, cfg.model).guards}
        for t in (t for t in guards if not t.probe_only):
            _remember_base(store, cfg, entries[t.name], report.champion_scores[t.name], reg.info().base.sha256)
        for row in report.rows:
            if row.guard:
                row.base = row.champion
    reg.attach(cand.candidate.version, layout.METRICS, report.model_dump_json(indent=2).encode())
    return report


def gate(store: ObjectStore, cfg: SkillgraftConfig, cand: CandidateInfo, report: RegressionReport) -> Decision:
    """Apply the policy; the decision (with both version ids and the policy) is stored with the candidate."""
    reg = Registry(store, cfg.model)
    required = reg.manifest(cand.parent).tasks if cand.parent else []
    decision = decide(report, gate_policy(store, cfg), required_tasks=required)
    reg.attach(cand.candidate.version, layout.DECISION, decision.model_dump_json(indent=2).encode())
    reg.attach(cand.candidate.version, layout.CARD, model_card(reg, cand, report, decision).encode())
    return decision


def promote(store: ObjectStore, cfg: SkillgraftConfig, cand: CandidateInfo, decision: Decision) -> PromotionResult:
    """Move the champion pointer to the candidate — only if it still points where it did when training started."""
    reg = Registry(store, cfg.model)
    reason = f"gate passed vs {decision.champion}: {decision.summary()}"
    try:  # the move id is the same on every retry of this step: a retry recognises its own landed pointer write
        pointer = reg.promote(cand.candidate.version, reason=reason, expected_etag=cand.champion_etag,
                              move_id=promotion_move_id(cand))  # fmt: skip
    except PromotionConflict as e:
        current = e.current.version if e.current else None
        why = (f"champion moved to {current} while {cand.candidate.version} was trained from {label(cand.parent)}; "
               "recorded as superseded, retrain from the new champion")  # fmt: skip
        reg.record("superseded", cand.candidate.version, reason=why)
        return PromotionResult(promoted=False, champion=current, previous=cand.parent, reason=why)
    return PromotionResult(promoted=True, champion=pointer.version, previous=pointer.previous, reason=reason)


def promotion_move_id(cand: CandidateInfo) -> str:
    """Deterministic per candidate and gated-against champion: a retried promote step computes the same id."""
    return f"retrain:{cand.candidate.version}:from:{label(cand.parent)}:etag:{cand.champion_etag or 'none'}"


def reject(store: ObjectStore, cfg: SkillgraftConfig, cand: CandidateInfo, decision: Decision) -> None:
    Registry(store, cfg.model).reject(
        cand.candidate.version, reason=f"gate vs {decision.champion}: {decision.summary()}"
    )


def post_promotion_check(store: ObjectStore, cfg: SkillgraftConfig, version: str, *, smoke: bool = True) -> CheckResult:
    """Load the champion back from the store (every file of its chain checked against its manifest's sha256, the base
    against its recorded hash) and re-score a few examples of every task it knows.

    Fails closed: when the version can't be loaded back, when it has no gate scores to compare with (metrics.json),
    when the smoke suite can't run, or when a task's smoke score falls more than ``suite.smoke_tolerance`` below what
    the gate saw on the same examples. ``smoke=False`` (a forced manual promotion of a version the gate never scored)
    stops after the load-back.
    """
    from skillgraft.store import KeyNotFound

    reg = Registry(store, cfg.model)
    try:
        loaded = load_version(reg, version)
    except Exception as e:  # noqa: BLE001 - any failure to load the champion back is exactly what this check catches
        return CheckResult(ok=False, version=version, reasons=[f"champion {version} could not be loaded back from {store.url}: {e}"], scores={})  # fmt: skip
    if not smoke:
        return CheckResult(ok=True, version=version, scores={}, smoke=False,
                           reasons=["loaded back from the store, checksums verified; smoke evaluation skipped"])  # fmt: skip
    try:
        metrics = RegressionReport.model_validate_json(reg.read_attachment(version, layout.METRICS))
    except KeyNotFound:
        return CheckResult(ok=False, version=version, scores={},
                           reasons=[f"{version} has no gate scores ({layout.METRICS}) to compare the smoke evaluation with"])  # fmt: skip
    k = cfg.suite.smoke_examples
    reasons: list[str] = []
    scores: dict[str, float] = {}
    try:
        tasks = suite_tasks(store, reg.manifest(version).tasks, [], k)
        got_scores = {
            task.name: score_task(loaded.model, loaded.tokenizer, task, cfg.suite.eval_batch_size) for task in tasks
        }
    except Exception as e:  # noqa: BLE001 - a smoke suite that can't run is a failed check (fail closed)
        return CheckResult(ok=False, version=version, reasons=[f"smoke evaluation of {version} could not run: {e}"], scores={})  # fmt: skip
    for task in tasks:
        got = got_scores[task.name]
        scores[task.name] = got.score
        seen = metrics.candidate_scores.get(task.name)
        if seen is None:
            reasons.append(f"task {task.name}: no gate score recorded")
            continue
        expected = sum(seen.correct[:k]) / max(1, min(k, len(seen.correct)))
        if got.score < expected - cfg.suite.smoke_tolerance:
            reasons.append(f"task {task.name}: smoke score {got.score:.3f} vs {expected:.3f} at the gate")
    return CheckResult(
        ok=not reasons, version=version, reasons=reasons or ["smoke scores match the gate"], scores=scores
    )


def auto_rollback(store: ObjectStore, cfg: SkillgraftConfig, check: CheckResult, to: str) -> ChampionPointer:
    """Put ``to`` back as champion after ``check`` failed — only while the failed version is still the champion.

    If another run promoted meanwhile, its promotion stands (PromotionConflict) and the failure is recorded.
    """
    reg = Registry(store, cfg.model)
    reason = f"automatic rollback: post-promotion check of {check.version} failed: {'; '.join(check.reasons)}"
    pointer, etag = reg.champion_with_etag()
    if pointer is None or pointer.version != check.version:
        reg.record("rollback-skipped", check.version, reason=f"{reason}; champion already moved on, not rolled back")
        raise PromotionConflict(f"champion is no longer {check.version}; not rolling back", current=pointer)
    # the champion before the failed one was live a moment ago: restoring it is not a new override of the gate,
    # even if it had been forced in (the rollback is then recorded as forced)
    return reg.rollback(to, reason=reason, expected_etag=etag, force=True)


def record_check(store: ObjectStore, cfg: SkillgraftConfig, check: CheckResult, *, skipped: bool = False) -> None:
    """Log the post-promotion check of ``check.version`` (``post-check-passed`` / ``-failed``; ``skipped``: the
    promotion asked for no check). Without such an entry ``status`` reports the champion as never checked."""
    action = "post-check-skipped" if skipped else "post-check-passed" if check.ok else "post-check-failed"
    Registry(store, cfg.model).record(action, check.version, reason="; ".join(check.reasons))


class Resumed(BaseModel):
    """What :func:`finish_interrupted` did before a run: notes for the outcome, and the champion it leaves."""

    notes: list[str] = []
    champion: str | None = None
    stop: bool = Field(False, description="the unchecked champion failed its check and could not be rolled back: "
                       "nothing may train on it")  # fmt: skip


def finish_interrupted(store: ObjectStore, cfg: SkillgraftConfig) -> Resumed:
    """Before a run trains: refuse a damaged champion pointer, and finish the post-promotion check an earlier run or
    ``promote`` left undone (it died between moving the pointer and the check), rolling back if it fails.

    Raises :class:`~skillgraft.registry.ChampionMissing` when ``champion.json`` is gone but the history records
    champions (``skillgraft repair``); nothing is trained then. Versions that were never gated need nothing here:
    :func:`untrained_batches` hands their batches to this run again.
    """
    reg = Registry(store, cfg.model)
    if reg.info() is None:
        return Resumed()
    history = reg.history()
    reg.require_intact_pointer(history)
    pointer = reg.champion()
    out = Resumed(champion=pointer.version if pointer else None)
    unchecked = reg.unchecked_champion(pointer, history)
    if unchecked is None:
        return out
    v = unchecked.version

    def check(version: str, _previous: str | None) -> CheckResult:
        got = check_champion(store, cfg, version)
        record_check(store, cfg, got)
        return got

    settled = settle(v, unchecked.previous, check, lambda c, to: auto_rollback(store, cfg, c, to).version)
    out.champion = settled.champion
    why = "; ".join(settled.check.reasons) if settled.check else ""
    first = f"champion {v} had not been checked after its promotion"
    if settled.status == "promoted":
        out.notes.append(f"{first} (an earlier run stopped): checked now, passed")
    elif settled.status == "check-failed":
        out.stop = True
        out.notes.append(f"{first}; the check run now failed ({why}) and there is no earlier champion to roll back "
                         f"to. Nothing was trained (the waiting data stays waiting); promote a good version, or fix {v}")  # fmt: skip
    elif settled.status == "rollback-skipped":
        out.notes.append(f"{first}; the check run now failed ({why}), but the champion moved on to "
                         f"{settled.champion} meanwhile: not rolled back")  # fmt: skip
    else:
        out.notes.append(f"{first}; the check run now failed ({why}): rolled back to {settled.champion}")
    return out


def check_champion(store: ObjectStore, cfg: SkillgraftConfig, version: str) -> CheckResult:
    """:func:`post_promotion_check`, smoke-testing against the gate's scores when the version has them (a version
    the gate never scored, e.g. promoted with --force, is only loaded back)."""
    from skillgraft.store import KeyNotFound

    try:
        Registry(store, cfg.model).read_attachment(version, layout.METRICS)
        smoke = True
    except KeyNotFound:
        smoke = False
    return post_promotion_check(store, cfg, version, smoke=smoke)


def model_card(reg: Registry, cand: CandidateInfo, report: RegressionReport, decision: Decision) -> str:
    m = reg.manifest(cand.candidate.version)
    t = m.training
    lines = [
        f"# {m.model} {m.version}",
        "",
        f"- parent: {label(m.parent)}; base: `{m.base.source}` (sha256 {m.base.sha256[:12]}…)",
        f"- recipe: `{json.dumps(m.recipe)}`",
        f"- data: {', '.join(f'{b.task}/{b.batch_id}' for b in m.batches)}",
        f"- tasks known: {', '.join(m.tasks)}",
    ]
    if m.adapter is not None:
        lines.append(f"- adapter: {' + '.join(m.adapter.files)}, on the weights of {m.adapter.base_model_name_or_path} "
                     f"(`skillgraft export {m.version} --format adapter`)")  # fmt: skip
    if m.flow_run_id is not None:
        lines.append(f"- Prefect flow run: {m.flow_run_id}")
    if t is not None:
        lines.append(
            f"- training: {t.steps} steps, lr {t.learning_rate}, batch {t.batch_size}, seed {t.seed}, {t.device} "
            f"{t.dtype}, {t.seconds:.1f}s; trainable {t.trainable_parameters:,} of {t.total_parameters:,} parameters "
            f"({100 * t.trainable_parameters / max(1, t.total_parameters):.1f}%)"
        )
    if m.search is not None:
        lines += ["", "## Search", "", m.search.markdown()]
    verdicts = decision.task_verdicts([r.task for r in report.rows])  # the gate's checks, never recomputed here
    lines += ["", "## Regression suite", "", report.markdown(verdicts), "", "## Decision", "", decision.markdown(), ""]
    return "\n".join(lines)


def export(store: ObjectStore, model: str, version: str | None, out: Path, *, format: str = "merged") -> Path:
    """:func:`skillgraft.export.export`: the version's merged weights (a full Hugging Face model directory) or, with
    ``format="adapter"``, a lora version's PEFT adapter; with a model card and ``skillgraft.json`` either way."""
    from skillgraft.export import export as write

    return write(store, model, version, out, format=format)  # type: ignore[arg-type]
