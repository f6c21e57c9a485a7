"""The landing-zone sensor (Prefect has none): announce files that arrived without ``skillgraft submit``.

Deployed on an interval (``deployments/serve.py``). Each run lists ``incoming/`` of the store (a local directory or
S3), and emits ``skillgraft.data.arrived`` once per file not announced before for the model — which triggers the
model's ``retrain`` deployment. What was announced is remembered in the store (see ``tasks/arrivals.py``), so a
restarted or crashed watcher neither forgets nor floods: at worst a file is announced twice, never zero times.

``skillgraft submit`` announces its file itself, through :func:`announce` (re-exported here).
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from skillgraft.config import load_config
from tasks.arrivals import Arrival, NoPrefectServer, announce, announce_arrival, scan
from tasks.events import artifact_key

__all__ = ["Arrival", "NoPrefectServer", "announce", "watch"]


def _run_name() -> str:
    return f"watch-{flow_run.parameters.get('model') or 'default'}"


@flow(name="watch", flow_run_name=_run_name, log_prints=True)
def watch(model: str | None = None, store: str | None = None, config: str | None = None) -> list[Arrival]:
    """Announce every file waiting in the landing zone that was never announced for ``model``; returns them."""
    cfg = load_config(config, store=store, model=model)
    found = scan(cfg)
    announced = [a for a in (announce_arrival(cfg, arrival) for arrival in found) if a is not None]
    if announced:
        lines = [f"- `{a.key}` (task `{a.task or '?'}`, {a.size:,} bytes, sha {a.sha16})" for a in announced]
        create_markdown_artifact(
            f"# Announced {len(announced)} new file(s)\n\n" + "\n".join(lines)
            + f"\n\nEach emitted `skillgraft.data.arrived` for model `{cfg.model}` (store `{cfg.store}`).\n",
            key=artifact_key(cfg.model, "arrivals"), description="Files found in the landing zone",
        )  # fmt: skip
    print(f"{len(announced)} new file(s) announced for {cfg.model}" if announced else "nothing new in the landing zone")
    return announced
