"""The Prefect UI tells the story of a run: a real browser (Debian's headless chromium) opens the triggered run.

Screenshots go to the test's tmp dir; with SKILLGRAFT_UPDATE_SCREENSHOTS=1 they also replace docs/img/run.png and
docs/img/training.png (the images in docs/OPERATIONS.md).
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from .browser import Browser, find_chromium
from .conftest import MODEL, Service, Triggered, artifacts_of

pytestmark = pytest.mark.slow

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: install Debian's package (apt-get install -y chromium) to run the UI test",
)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def publish(shot: Path, name: str) -> None:
    if os.environ.get("SKILLGRAFT_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMG / name)


@needs_chromium
def test_flow_run_page_shows_the_outcome_and_every_artifact(service: Service, triggered: Triggered, tmp_path):
    run = triggered.runs[0]
    keys = sorted(artifacts_of(run.id))
    with Browser(CHROMIUM, width=1400, height=1300) as page:
        page.goto(f"{service.ui}/runs/flow-run/{run.id}")
        # the Artifacts tab appears once the run's state has loaded
        page.wait_for("(t => t && t.offsetParent !== null)(document.getElementById('artifacts'))")
        page.evaluate("document.getElementById('artifacts').click()")
        page.wait_for_text(f"{MODEL}-count-promoted", *keys)
        text = page.text()
        shot = page.screenshot(tmp_path / "run.png")
    assert "Can't connect to Server API" not in text
    assert "retrain demo when data arrives" in text  # the run says which automation started it
    assert png_size(shot) == (1400, 1300)
    publish(shot, "run.png")


@needs_chromium
def test_training_artifact_renders_the_loss_curve_image(service: Service, triggered: Triggered, tmp_path):
    training = artifacts_of(triggered.runs[0].id)[f"{MODEL}-training"]
    with Browser(CHROMIUM, width=1400, height=900) as page:
        page.goto(f"{service.ui}/artifacts/artifact/{training.id}")
        page.wait_for_text("Training v2", "trainable parameters", "sa_proj")
        # the data: URL image is really decoded and laid out (a broken image has naturalWidth 0)
        page.wait_for("Array.from(document.images).some(i => i.src.startsWith('data:image/png') && i.complete "
                      "&& i.naturalWidth === 640 && i.getBoundingClientRect().width > 300)")  # fmt: skip
        shot = page.screenshot(tmp_path / "training.png")
    assert png_size(shot) == (1400, 900)
    publish(shot, "training.png")
