"""Training that does not need tuning: a budgeted search for the strongest candidate that keeps what the model knows.

The defaults that suit the 0.3M-parameter demo model (lr 5e-4) wipe out a pretrained model, and the right learning
rate moves with the model, the recipe and the data. So on a pretrained base (unless the config sets
``train.learning_rate`` or ``train.steps``, or ``search.mode`` says otherwise) the fine-tune step runs a short search:

1. **Ladder**: train from the champion once per learning rate in ``search.learning_rates`` (``search.steps`` steps
   each), with the drift watch on against the gate's KL limit, on the new data minus a held-back *selection* slice.
2. **Interpolation** (WiSE-FT): versions are deltas, so the champion plus ``α ×`` a rung's delta, for each α in
   ``search.alphas``, is one more candidate that costs one evaluation, not a training run.
3. **Choice**: each candidate is scored on the selection slice of the new task (how much it learned: data it was not
   trained on and the gate does not use) and held to the gate's own checks on what must be kept
   (:func:`skillgraft.gate.keeps`: every old task, every guard, every drift limit, with the gate's tolerances and
   significance test), champion against candidate. The candidate that learns the most while every check
   holds is kept; if none holds, the one that drifted least is kept (and the gate will reject it, naming the guard
   or the drift value).

Bounded: ``search.budget_s`` of wall-clock time (a rung not started in time is skipped; the evaluations of a rung
already trained still run), and every candidate's result goes into the version's manifest (``search``), its model
card, and a UI artifact with the learn-versus-forget frontier drawn as a plot.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence

import torch

from skillgraft.refs import Rung, SearchRecord
from skillgraft.schemas.gate import GatePolicy
from skillgraft.schemas.report import BiasProbe, RegressionReport, SuiteRow
from skillgraft.schemas.training import SearchConfig

log = logging.getLogger(__name__)


def active(search: SearchConfig, train_fields_set: set[str], pretrained: bool) -> bool:
    """Whether the fine-tune searches: ``on``; or ``auto`` on a pretrained base whose config leaves learning rate and
    steps to skillgraft (a user who sets them gets exactly those)."""
    if search.mode != "auto":
        return search.mode == "on"
    return pretrained and not ({"learning_rate", "steps"} & train_fields_set)


def selection_split(examples: Sequence, fraction: float) -> tuple[list, list]:
    """(train, selection): a stable, hash-based share of the new task's training rows held back from the search's
    training to score its candidates (at least 2 held back and 2 kept when there are 4 or more)."""

    def h(ex) -> float:  # salted: the intake's eval split is itself a prompt-hash split, so its train side would
        # hold no prompt below the same unsalted threshold
        return int(hashlib.sha256(b"skillgraft-search:" + ex.prompt.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    held = [ex for ex in examples if h(ex) < fraction]
    if len(examples) >= 4 and len(held) < 2:
        held = sorted(examples, key=h)[:2]
    if len(examples) - len(held) < 2:
        held = held[: max(0, len(examples) - 2)]
    ids = {id(ex) for ex in held}
    return [ex for ex in examples if id(ex) not in ids], held


def run(
    model, tokenizer, parent_state: dict[str, torch.Tensor], *, train_examples: Sequence, replay: Sequence,
    checks: Sequence, new_task, probe_prompts: Sequence, policy: GatePolicy, search: SearchConfig, recipe, train_cfg,
    replay_fraction: float, eval_batch_size: int,
) -> tuple[object, SearchRecord, object]:  # fmt: skip
    """Run the search on ``model`` (holding the champion's weights, ``parent_state``); return the model holding the
    chosen candidate's weights, the record, and the chosen rung's TrainingRecord. For a LoRA recipe the chosen rung's
    adapter, its ``lora_B`` scaled by the chosen α, is held for the returned model
    (:func:`~skillgraft.recipes.take_adapter`).

    ``checks``: EvalTasks whose score may not drop (guards — ``guard=True`` — and old tasks); ``policy``: the gate
    policy the gate will apply, whose :func:`~skillgraft.gate.keeps` checks judge each candidate. ``new_task``: an
    EvalTask (metric, decoding budget) whose examples are replaced by the selection slice. ``probe_prompts``: prompts
    for the drift probes (KL, number-token and answer-token mass) against the champion.
    """
    from skillgraft.evaluate import EvalTask, score_task
    from skillgraft.gate import keeps
    from skillgraft.probe import answer_token_ids, greedy_mass, mean_kl, number_token_ids, reference
    from skillgraft.recipes.adapter import hold_adapter, take_adapter
    from skillgraft.train import DriftWatch, fine_tune, mix_replay
    from skillgraft.vision import text_tokenizer

    started = time.perf_counter()
    train_part, selection = selection_split(list(train_examples), search.selection_fraction)
    record = SearchRecord(learning_rates=search.learning_rates, alphas=search.alphas, steps=search.steps,
                          budget_s=search.budget_s, selection_rows=len(selection))  # fmt: skip
    sel_task = EvalTask(name=new_task.name, metric=new_task.metric, max_new_tokens=new_task.max_new_tokens,
                        examples=selection, new=True)  # fmt: skip
    mix = mix_replay(train_part, list(replay), replay_fraction, train_cfg.seed)

    def score(t):
        return t.scorer(model, tokenizer) if t.scorer is not None else score_task(model, tokenizer, t, eval_batch_size)

    model.eval()
    before = {t.name: score(t) for t in checks}
    answer_ids = answer_token_ids(text_tokenizer(tokenizer), [ex.answer for ex in train_examples])
    sets = {"number": number_token_ids(text_tokenizer(tokenizer))}
    if answer_ids:
        sets["answer"] = answer_ids
    steps_probed = 4
    ref = (
        reference(model, tokenizer, probe_prompts, steps=steps_probed, token_sets=sets, batch_size=eval_batch_size)
        if probe_prompts
        else None
    )
    start_learned = score(sel_task).score if selection else 0.0
    log.info("search: champion scores %.3f on %d held-back new-task rows", start_learned, len(selection))

    def evaluate(lr: float, alpha: float, steps: int, seconds0: float) -> Rung:
        t0 = time.perf_counter()
        learned = score(sel_task).score if selection else 0.0
        now = {t.name: score(t) for t in checks}
        deltas = {t.name: round(now[t.name].score - before[t.name].score, 6) for t in checks}
        rows = [SuiteRow(task=t.name, new=False, metric=now[t.name].metric, n=now[t.name].n,
                         champion=before[t.name].score, candidate=now[t.name].score, guard=t.guard, base=t.base,
                         tolerance=t.tolerance) for t in checks]  # fmt: skip
        kl = mass_rise = probe = None
        if ref is not None:
            kl = mean_kl(ref, model)
            masses = greedy_mass(model, tokenizer, probe_prompts, sets, steps_probed, eval_batch_size)
            mass_rise = masses["number"] - ref.masses["number"]
            probe = BiasProbe(prompts=len(probe_prompts), champion=ref.masses["number"], candidate=masses["number"],
                              steps=steps_probed, answer_tokens=len(answer_ids),
                              answer_champion=ref.masses.get("answer"), answer_candidate=masses.get("answer"),
                              kl=kl)  # fmt: skip
        report = RegressionReport(champion="champion", candidate=f"lr {lr:g} α {alpha:g}", rows=rows, probe=probe,
                                  champion_scores=before, candidate_scores=now)  # fmt: skip
        why = [c.why for c in keeps(report, policy) if not c.passed]
        worst = min(deltas.values()) if deltas else None
        return Rung(learning_rate=lr, alpha=alpha, steps=steps, learned=learned, worst_guard=worst, checks=deltas,
                    kl=kl, number_mass_rise=mass_rise, passed=not why, why=why,
                    seconds=round(seconds0 + time.perf_counter() - t0, 2))  # fmt: skip

    from skillgraft.distributed import process_count

    one_process = process_count(train_cfg.processes) == 1  # the drift watch probes in one process: DDP rungs run
    # to their step count, and the KL limit still judges each candidate after training
    watch = DriftWatch(metric="kl", budget=policy.max_kl, every=max(1, search.steps // 6),
                       prompts=min(32, len(probe_prompts))) if policy.max_kl is not None and probe_prompts and one_process else None  # fmt: skip
    best_state: dict[str, torch.Tensor] | None = None
    best_adapter = None  # a LoRA rung's adapter and the α kept with it
    for lr in search.learning_rates:
        if record.rungs and search.budget_s is not None and time.perf_counter() - started > search.budget_s:
            record.skipped.append(lr)
            continue
        model.load_state_dict(parent_state)
        cfg = train_cfg.model_copy(update={"learning_rate": lr, "steps": search.steps, "drift_watch": watch})
        t0 = time.perf_counter()
        tuned = fine_tune(model, tokenizer, mix, recipe, cfg, probe_prompts=probe_prompts, new_examples=train_part)
        model = tuned.model
        adapter = take_adapter(model)  # a LoRA rung's adapter, before the next rung's fine-tune replaces it
        trained = time.perf_counter() - t0
        state = model.state_dict()
        # every tensor training changed (by name after the recipe's finish: a LoRA rung is merged into its weights)
        delta = {k: (v.detach() - parent_state[k]).clone() for k, v in state.items()
                 if k in parent_state and not torch.equal(v, parent_state[k])}  # fmt: skip
        for i, alpha in enumerate(sorted(search.alphas, reverse=True)):
            with torch.no_grad():
                for k, d in delta.items():
                    state[k].copy_(parent_state[k] + alpha * d)
            rung = evaluate(lr, alpha, tuned.record.steps, trained if i == 0 else 0.0)
            rung_record = tuned.record
            record.rungs.append(rung)
            log.info("search: lr %g α %g: learned %.3f, worst %s, KL %s → %s", lr, alpha, rung.learned,
                     rung.worst_guard, rung.kl, "ok" if rung.passed else "; ".join(rung.why))  # fmt: skip
            if _better(rung, record):
                record.chosen = len(record.rungs) - 1
                best_state = {k: state[k].detach().clone() for k in delta}
                best_adapter = (adapter, alpha) if adapter is not None else None
                best_training = rung_record
    if record.chosen is None:  # nothing passed: keep the candidate that drifted least (the gate will say why)
        i = min(
            range(len(record.rungs)), key=lambda j: (record.rungs[j].kl or 0.0, -(record.rungs[j].worst_guard or 0.0))
        )
        record.chosen = i
        rung = record.rungs[i]
        record.reason = (f"no candidate kept every guard, old task and drift limit; kept the one that drifted least "
                         f"(lr {rung.learning_rate:g}, α {rung.alpha:g}: {'; '.join(rung.why)}): the gate decides")  # fmt: skip
        model, best_training = _rebuild(model, tokenizer, parent_state, mix, train_part, recipe, train_cfg, watch,
                                        probe_prompts, rung, search)  # fmt: skip
    else:
        rung = record.rungs[record.chosen]
        record.reason = (f"kept lr {rung.learning_rate:g}, α {rung.alpha:g}: learned {rung.learned:.3f} on the held-back "
                         f"rows (champion {start_learned:.3f}) with every check within its limit")  # fmt: skip
        model.load_state_dict(parent_state)
        with torch.no_grad():
            sd = model.state_dict()
            for k, v in (best_state or {}).items():
                sd[k].copy_(v)
        hold_adapter(model, best_adapter[0].scaled(best_adapter[1]) if best_adapter is not None else None)
    record.seconds = round(time.perf_counter() - started, 1)
    training = best_training.model_copy(update={"learning_rate": rung.learning_rate})
    return model, record, training


def _better(rung: Rung, record: SearchRecord) -> bool:
    if not rung.passed:
        return False
    if record.chosen is None:
        return True
    best = record.rungs[record.chosen]
    return (rung.learned, rung.alpha) > (best.learned, best.alpha)


def _rebuild(model, tokenizer, parent_state, mix, train_part, recipe, train_cfg, watch, probe_prompts, rung: Rung,
             search: SearchConfig):  # fmt: skip
    """Train the chosen rung again (same seed: the same weights) and apply its α: the one failed candidate kept (a
    LoRA rung's adapter, scaled by the same α, is held for the model: :func:`~skillgraft.recipes.take_adapter`)."""
    from skillgraft.recipes.adapter import hold_adapter, take_adapter
    from skillgraft.train import fine_tune

    model.load_state_dict(parent_state)
    cfg = train_cfg.model_copy(
        update={"learning_rate": rung.learning_rate, "steps": search.steps, "drift_watch": watch}
    )
    tuned = fine_tune(model, tokenizer, mix, recipe, cfg, probe_prompts=probe_prompts, new_examples=train_part)
    model = tuned.model
    adapter = take_adapter(model)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k in parent_state and not torch.equal(v, parent_state[k]):
                v.copy_(parent_state[k] + rung.alpha * (v - parent_state[k]))
    hold_adapter(model, adapter.scaled(rung.alpha) if adapter is not None else None)
    return model, tuned.record
