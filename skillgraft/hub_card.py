"""The model card of an exported directory: ``README.md`` with the YAML front matter the Hugging Face hub reads
(``base_model``, ``library_name``, ``tags``, ``model-index``), then how to load it, its lineage, the regression suite
and the gate's decision.

Every score and verdict is rendered from what the version stored (``metrics.json``, ``decision.json``): the gate's
:class:`~skillgraft.schemas.gate.Check` records say pass or fail; nothing here recomputes a threshold. Pure text (no
torch): pydantic records in, a string out.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import yaml

from skillgraft.refs import Manifest
from skillgraft.schemas.gate import Decision
from skillgraft.schemas.report import RegressionReport

ExportFormat = Literal["merged", "adapter"]

TAGS = ("skillgraft", "continual-learning")
"""Tags every exported card carries; the recipe's name follows them."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def metadata(manifest: Manifest, lineage: dict[str, Any], report: RegressionReport | None,
             decision: Decision | None, format: ExportFormat) -> dict[str, Any]:  # fmt: skip
    """The card's front matter as a mapping (what :func:`render` writes as YAML)."""
    kind = str(manifest.recipe.get("kind", "unknown"))
    adapter = format == "adapter"
    meta: dict[str, Any] = {"base_model": manifest.base.source}
    relation = _relation(manifest, adapter)
    if relation is not None:
        meta["base_model_relation"] = relation
    meta["library_name"] = "peft" if adapter else "transformers"
    tags = [*TAGS, kind]
    if adapter:
        tags += [t for t in ("peft", "lora") if t not in tags]
    meta["tags"] = tags
    results = _results(report, manifest.version) if report is not None else []
    if results:
        meta["model-index"] = [{"name": f"{manifest.model}-{manifest.version}", "results": results}]
    meta["skillgraft"] = {
        "model": manifest.model,
        "version": manifest.version,
        "format": format,
        "parent": manifest.parent,
        "chain": lineage["chain"],
        "flow_run_id": lineage["flow_run_id"],
        "trained_with": lineage["trained_with"],
        "exported_with": lineage["exported_with"],
        "gate": _gate(decision),
    }
    if adapter and manifest.adapter is not None:
        meta["skillgraft"]["adapter_applies_to"] = manifest.adapter.base_model_name_or_path
    return meta


def render(manifest: Manifest, lineage: dict[str, Any], report: RegressionReport | None, decision: Decision | None,
           format: ExportFormat, notes: list[str] | None = None) -> str:  # fmt: skip
    """The whole ``README.md``: front matter, then the text. ``notes``: what could not be read (a missing or
    unreadable report), said in the card instead of failing the export."""
    meta = metadata(manifest, lineage, report, decision, format)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    m = manifest
    what = (
        f"A PEFT LoRA adapter: it changes the weights of `{m.adapter.base_model_name_or_path}` "
        f"({'the base' if m.parent is None else 'the parent version'}) and nothing else."
        if format == "adapter" and m.adapter is not None
        else "The full weights of this version (its base with every delta of its chain applied), as safetensors."
    )
    lines = [f"# {m.model} {m.version}", "", what, "", "## How to load", "", *_how_to_load(m, format), ""]
    lines += ["## Lineage", "", *_lineage_lines(m, lineage, format), ""]
    lines += ["## Regression suite", ""]
    if report is not None:
        verdicts = decision.task_verdicts([r.task for r in report.rows]) if decision is not None else None
        lines += [report.markdown(verdicts), ""]
    else:
        lines += ["Not scored: this version has no regression report (it was not gated, or was promoted by force).", ""]
    lines += ["## Decision", ""]
    lines += [decision.markdown() if decision is not None else "No gate decision is stored for this version.", ""]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return f"---\n{front}---\n\n" + "\n".join(lines)


def _relation(manifest: Manifest, adapter: bool) -> str | None:
    """``base_model_relation`` where the hub can follow it: a hub base, and (for an adapter) one trained on it."""
    if not _HUB_ID.fullmatch(manifest.base.source):
        return None
    if adapter:
        return "adapter" if manifest.parent is None else None
    return "finetune"


def _results(report: RegressionReport, version: str) -> list[dict[str, Any]]:
    """One model-index result per scored row of the suite (new, old and guard tasks): the version's score."""
    out = []
    for row in report.rows:
        if row.metric == "none":  # a prompts-only guard is probed for drift, not scored
            continue
        out.append({
            "task": {"type": "text-generation", "name": f"{row.kind} task"},
            "dataset": {"name": row.task, "type": row.task, "split": "eval"},
            "metrics": [{"type": row.metric, "value": round(row.candidate, 4), "name": f"{row.metric} ({version})"}],
        })  # fmt: skip
    return out


def _gate(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "verdict": decision.verdict,
        "against": decision.champion,
        "checks": [{"kind": c.kind, "subject": c.subject, "passed": c.passed} for c in decision.checks if c.decides],
    }


def _how_to_load(m: Manifest, format: ExportFormat) -> list[str]:
    if format == "merged":
        return [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer  # a vision-language model: "
            "AutoModelForImageTextToText, AutoProcessor",
            "",
            'model = AutoModelForCausalLM.from_pretrained("THIS_DIR")',
            'tokenizer = AutoTokenizer.from_pretrained("THIS_DIR")',
            "```",
        ]
    assert m.adapter is not None
    if m.parent is None:
        parent = (f"the base, `{m.base.source}`" + (f" at revision `{m.base.revision}`" if m.base.revision else "")
                  + (f" (also kept in the store as a snapshot of model `{m.model}`)" if m.base.snapshot else ""))  # fmt: skip
    else:
        parent = (f"version `{m.parent}` of `{m.model}`: write it with "
                  f"`skillgraft export {m.parent} --model {m.model} --out PARENT_DIR`")  # fmt: skip
    return [
        f"The adapter applies to the weights of {parent}. Load those, then the adapter on top:",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        'parent = AutoModelForCausalLM.from_pretrained("PARENT_DIR")',
        'model = PeftModel.from_pretrained(parent, "THIS_DIR")',
        "```",
        "",
        "On any other weights (the base of a later version, another version) it gives another model. The merged "
        f"weights of this version are `skillgraft export {m.version} --model {m.model} --out DIR`.",
    ]


def _lineage_lines(m: Manifest, lineage: dict[str, Any], format: ExportFormat) -> list[str]:
    chain = " → ".join(["base", *lineage["chain"]])
    run = lineage["flow_run_id"] or "none recorded (not trained by a Prefect flow run)"
    lines = [
        f"- chain: {chain}",
        f"- base: `{m.base.source}`"
        + (f" at revision `{m.base.revision}`" if m.base.revision else "")
        + f" (weights sha256 {m.base.sha256[:12]}…)",
        f"- recipe: `{json.dumps(m.recipe)}`",
        f"- data: {', '.join(lineage['batches']) or 'none recorded'}; tasks known: {', '.join(m.tasks) or 'none'}",
        f"- Prefect flow run: {run}",
        f"- created {m.created_at} by {m.created_by or 'unknown'}",
        f"- trained with: {_software(lineage['trained_with']) or 'not recorded'}",
        f"- exported with: {_software(lineage['exported_with'])}",
    ]
    if format == "adapter" and m.adapter is not None and m.adapter.strength != 1.0:
        lines.append(f"- the strength search kept α {m.adapter.strength:g}: it is folded into the adapter's lora_B")
    return lines


def _software(versions: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items())
