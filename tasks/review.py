"""What a run shows in the Prefect UI: artifact contents (markdown, tables, the loss curve) and the run's name.

Pure builders from the steps' typed results to text or bytes; the tasks in ``tasks/steps.py`` publish them under
stable keys (``artifact_key(model, what)``), so each kind of artifact is versioned across the runs of a model:

    <model>-data-validation   table: every file, every rule          <model>-data-rejected  what to fix, where it went
    <model>-training          recipe, trainable params, time, device, the loss curve (PNG data URL, inline)
    <model>-regression        table: per task champion, candidate, delta, pass (the gate's checks of it)
    <model>-decision          the gate's verdict, reasons, the version's location, what happens next
    <model>-model-card        the model card's text             <model>-model-card-link  link to card.md in the store
    <model>-post-check        the post-promotion smoke check     <model>-rollback       what was rolled back and why
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from skillgraft import layout
from skillgraft.data import IngestResult
from skillgraft.evaluate import RegressionReport
from skillgraft.gate import Decision
from skillgraft.steps import CandidateInfo, CheckResult, label


def object_url(store_url: str, key: str) -> str:
    """A clickable URL for an object: ``s3://bucket/prefix/key`` or ``file:///abs/path/key``."""
    if "://" in store_url:
        return f"{store_url.rstrip('/')}/{key}"
    return Path(store_url, *key.split("/")).as_uri()


def loss_curve_png(losses: list[float], log_every: int, title: str) -> bytes:
    """The training loss as a small PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.0), dpi=100)
    ax = fig.add_subplot()
    steps = [log_every * (i + 1) for i in range(len(losses))]
    ax.plot(steps, losses, marker="o" if len(losses) < 30 else None, markersize=3, color="#2563eb")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def frontier_png(record, title: str) -> bytes:
    """The search's learn-versus-forget frontier: each candidate's score on the held-back new-task rows against its
    worst guard / old-task change, kept ones and failed ones marked, lines joining the α of each learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.add_subplot()
    for lr in dict.fromkeys(r.learning_rate for r in record.rungs):
        rungs = [r for r in record.rungs if r.learning_rate == lr]
        xs = [r.worst_guard if r.worst_guard is not None else 0.0 for r in rungs]
        ax.plot(xs, [r.learned for r in rungs], marker="o", label=f"lr {lr:g}")
        for r, x in zip(rungs, xs):
            ax.annotate(f"α{r.alpha:g}", (x, r.learned), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if not r.passed:
                ax.scatter([x], [r.learned], marker="x", color="#dc2626", s=40, zorder=3)
    if record.chosen is not None:
        kept = record.rungs[record.chosen]
        ax.scatter([kept.worst_guard or 0.0], [kept.learned], s=160, facecolors="none", edgecolors="#16a34a",
                   linewidths=2, zorder=4, label="kept")  # fmt: skip
    ax.axvline(0, color="#9ca3af", linewidth=0.8)
    ax.set_xlabel("worst change on a guard or old task (candidate − champion)")
    ax.set_ylabel("score on held-back new-task rows")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def search_markdown(version: str, record, image_url: str) -> str:
    return "\n".join([f"# Search for {version}", "", f"![learn vs forget frontier of {version}]({image_url})", "",
                      record.markdown(), ""])  # fmt: skip


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def training_markdown(cand: CandidateInfo, image_url: str | None) -> str:
    share = 100 * cand.trainable_parameters / max(1, cand.total_parameters)
    losses = cand.losses
    lines = [
        f"# Training {cand.candidate.version}",
        "",
        "| setting | value |",
        "|---|---|",
        f"| recipe | `{cand.recipe}` |",
        f"| trainable parameters | {cand.trainable_parameters:,} of {cand.total_parameters:,} ({share:.2f}%) |",
        f"| time | {cand.seconds:.1f} s |",
        f"| device | {cand.device} |",
        f"| parent | {label(cand.parent)} |",
        f"| tasks taught | {', '.join(cand.new_tasks)} |",
        f"| loss | {losses[0]:.3f} → {losses[-1]:.3f} (every {cand.log_every} steps)" if losses else "| loss | — |",
        "",
    ]
    if image_url:
        lines += [f"![training loss of {cand.candidate.version}]({image_url})", ""]
    return "\n".join(lines)


def data_rejected_markdown(rejected: list[IngestResult]) -> str:
    lines = ["# Data rejected", "", f"{len(rejected)} file(s) failed validation and were **not** trained on.", ""]
    for r in rejected:
        lines += [f"## `{r.file}` (task `{r.task}`)", "", f"Moved to `{r.location}`; nothing was deleted.", ""]
        problems = r.report.problems[:10] if r.report else []
        more = (r.report.issue_count - len(problems)) if r.report else 0
        lines += [f"- {p}" for p in problems] or [f"- {r.message}"]
        if more > 0:
            lines.append(f"- … and {more} more (full report: `{r.location}{layout.report_file('html')}`)")
        lines.append("")
    lines += [
        "## What to do",
        "",
        (
            "Fix the file (the lines above say where) and submit it again: `skillgraft submit <task> <file>` — or "
            f"drop it into `{layout.INCOMING_PREFIX}<task>/` of the store. The validation report of each file is "
            f"`{layout.report_file('json')}` / `{layout.report_file('html')}` in its quarantine folder."
        ),
        "",
    ]
    return "\n".join(lines)


def regression_table(report: RegressionReport, decision: Decision) -> list[dict]:
    """The regression table artifact: one row per task of the suite, its ``pass`` (None: not judged) and ``gate``
    line taken from the decision's checks of that task."""
    rows = []
    for r in report.rows:
        checks = decision.task_checks(r.task)
        failed = [c for c in checks if not c.passed]
        rows.append({
            "task": r.task, "kind": r.kind, "n": r.n, "champion": round(r.champion, 4),
            "candidate": round(r.candidate, 4), "delta": round(r.delta, 4),
            "base": round(r.base, 4) if r.base is not None else None, "pass": decision.task_verdict(r.task),
            "gate": "; ".join(c.why for c in (failed or checks)) or "not judged: " + decision.summary(),
        })  # fmt: skip
    return rows


def regression_summary(report: RegressionReport, decision: Decision) -> str:
    """The regression artifact's one-line description, from the same checks as its rows."""
    verdicts = decision.task_verdicts([r.task for r in report.rows])
    failed = [t for t, passed in verdicts.items() if passed is False]
    if failed:
        verdict = f"failed on {', '.join(failed)}"
    elif any(passed is None for passed in verdicts.values()):
        verdict = f"not judged: {decision.summary()}"
    else:
        verdict = f"all {len(verdicts)} tasks pass"
    return f"Regression suite, {report.candidate} vs {report.champion}: {verdict}"


def decision_markdown(decision: Decision, report: RegressionReport, where: str, policy_note: str) -> str:
    verdicts = decision.task_verdicts([r.task for r in report.rows])
    lines = [f"# Decision: {decision.verdict}", "", decision.markdown(), "", "## Regression suite", "",
             report.markdown(verdicts), "", f"Version stored at `{where}`", ""]  # fmt: skip
    if decision.promote:
        lines += ["## Next", "",
                  (f"`{decision.candidate}` will be promoted over `{decision.champion}`, then re-checked after "
                   "promotion (a failed check rolls it back automatically)."), ""]  # fmt: skip
    else:
        lines += [
            "## What happened, what to do",
            "",
            (
                f"The champion is unchanged (`{decision.champion}`). The candidate `{decision.candidate}` stays in "
                "the store, recorded as rejected (`skillgraft history`)."
            ),
            "",
            (
                "- a new task fell short of `min_gain`: submit more (or cleaner) data for it, or train longer "
                "(`train.steps` in skillgraft.yaml);"
            ),
            "- an old task dropped by more than `max_drop`: raise `replay`, or use a narrower recipe (`sa_proj`);",
            f"- the limits themselves are wrong for this model: change `gate` in skillgraft.yaml ({policy_note}).",
            "",
        ]
    return "\n".join(lines)


def superseded_markdown(reason: str) -> str:
    return (f"# Superseded\n\n{reason}\n\nNothing was lost: the candidate stays in the store. The next run (next "
            "arrival or the nightly schedule) trains from the new champion.\n")  # fmt: skip


def post_check_markdown(check: CheckResult, previous: str | None) -> str:
    verdict = "passed" if check.ok else "FAILED"
    lines = [f"# Post-promotion check of {check.version}: {verdict}", ""]
    lines += [f"- {r}" for r in check.reasons]
    if check.scores:
        lines += ["", "| task | smoke score |", "|---|---:|"] + [f"| {t} | {s:.3f} |" for t, s in check.scores.items()]
    if not check.ok:
        lines += ["", "## What happens, what to do", ""]
        if previous is None:
            lines += [
                (
                    f"There is no earlier champion to roll back to: `{check.version}` stays champion. Inspect it with "
                    "`skillgraft status`; if the store was damaged, restore the version's files (their checksums are "
                    f"in its {layout.MANIFEST}), or bootstrap again."
                ),
            ]
        else:
            lines += [f"The champion is rolled back to `{previous}` automatically (see the rollback artifact)."]
    return "\n".join(lines) + "\n"


def rollback_markdown(failed: str, to: str, reason: str, model: str) -> str:
    return "\n".join([
        "# Rolled back", "",
        f"`{failed}` was promoted, then failed its post-promotion check; the champion is **{to}** again.", "",
        f"Why: {reason}", "",
        "## What to do", "",
        (f"- nothing was deleted: `{failed}` stays in the store; `skillgraft status --model {model}` shows it and "
         f"`skillgraft history --model {model}` the promotion and the rollback;"),
        ("- a load failure (checksum mismatch) means the stored files changed after they were written: check the "
         "store (disk, bucket versioning) before retraining;"),
        ("- a score mismatch means the model behaves differently than at the gate (nondeterministic hardware?): "
         "raise `suite.smoke_tolerance` only if you understand why."),
        "",
    ])  # fmt: skip


def run_name(model: str, task: str | None, new_tasks: list[str] | None, status: str) -> str:
    """``demo-count-promoted``: model, what was taught (the task asked for, or the tasks found), outcome."""
    what = task or ("+".join(new_tasks) if new_tasks else "incoming")
    return f"{model}-{what}-{status}"


def rename_flow_run(name: str) -> None:
    """Rename the current flow run (the UI's run list shows the outcome without opening the run)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=name)
