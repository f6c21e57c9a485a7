"""The fine-tune over several processes (skillgraft.distributed): real gloo ranks on this CPU, started the way a GPU
node starts them (spawned processes, accelerate's process group), against the one-process Trainer."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from skillgraft import demo
from skillgraft.recipes import parse_recipe
from skillgraft.schemas.training import DriftWatch
from skillgraft.train import TrainConfig, TrainingError, fine_tune


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def trained(recipe: str = "sa_proj", **cfg):
    """(delta of every tensor training changed, the record) for a short seeded fine-tune of the demo model."""
    tokenizer = demo.build_tokenizer()
    model = demo.build_model(tokenizer)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(steps=6, batch_size=8, learning_rate=1e-3, progress=False, device="cpu", **cfg)
    out = fine_tune(model, tokenizer, demo.generate("first", 64, seed=0), parse_recipe(recipe), config)
    state = out.model.state_dict()
    return {k: state[k] - start[k] for k in start if not torch.equal(state[k], start[k])}, out.record


def assert_same_delta(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    scale = max(float(v.abs().max()) for v in a.values())
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-3 * scale, f"deltas differ by {worst:.3g} (delta scale {scale:.3g})"


def test_micro_batches_accumulate_to_the_whole_batch() -> None:
    whole, r1 = trained()
    micro, r2 = trained(micro_batch_size=2)  # 4 forward/backward passes per step
    assert_same_delta(whole, micro)
    assert r1.losses == pytest.approx(r2.losses, rel=1e-5) and r2.processes == 1


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["sa_proj", "lora"])
def test_two_gloo_processes_give_the_one_process_delta(recipe: str) -> None:
    one, r1 = trained(recipe)
    two, r2 = trained(recipe, processes=2, micro_batch_size=2)  # 2 ranks x 2 micro-batches of 2 = the batch of 8
    assert_same_delta(one, two)
    assert r2.processes == 2 and r2.steps == r1.steps == 6
    assert r1.losses == pytest.approx(r2.losses, rel=1e-5)


def spawned_children() -> list[int]:
    """This process's spawned rank processes (multiprocessing's spawn entry point in their command line)."""
    me, out = os.getpid(), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and b"spawn_main" in cmd:
            out.append(int(proc.name))
    return out


def joined(pid: int) -> bool:
    """A rank has joined the process group once it holds a socket (spawn itself talks over pipes)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
        return any(os.readlink(fd).startswith("socket:") for fd in fds)
    except OSError:
        return False


@pytest.mark.slow
def test_a_rank_killed_mid_training_fails_the_fine_tune_and_hands_nothing_back() -> None:
    tokenizer = demo.build_tokenizer()
    model = demo.build_model(tokenizer)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    killed: list[int] = []

    def kill_one_rank() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ranks = spawned_children()
            if len(ranks) == 2 and all(joined(pid) for pid in ranks):
                time.sleep(3)  # both joined the process group: let them train for a while
                os.kill(ranks[-1], signal.SIGKILL)
                killed.append(ranks[-1])
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_rank, daemon=True)
    killer.start()
    cfg = TrainConfig(steps=100_000, batch_size=8, progress=False, device="cpu", processes=2)
    with pytest.raises(TrainingError, match=r"distributed fine-tune failed \(2 processes\).*nothing was stored"):
        fine_tune(model, tokenizer, demo.generate("first", 64, seed=0), parse_recipe("sa_proj"), cfg)
    killer.join(5)
    assert killed, "the ranks never started"
    assert not spawned_children()  # the other rank was stopped too
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in start.items())  # nothing trained came back


def test_the_drift_watch_is_refused_with_several_processes_before_anything_starts() -> None:
    tokenizer = demo.build_tokenizer()
    cfg = TrainConfig(steps=5, batch_size=8, progress=False, device="cpu", processes=2,
                      drift_watch=DriftWatch(budget=0.1))  # fmt: skip
    with pytest.raises(TrainingError, match="drift_watch: null"):
        fine_tune(demo.build_model(tokenizer), tokenizer, demo.generate("first", 16, seed=0), parse_recipe("sa_proj"),
                  cfg, probe_prompts=["x"])  # fmt: skip
    assert not spawned_children()


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"processes": 3, "batch_size": 16}, "does not split evenly over 3 processes"),
        ({"processes": 0}, "give 1 or more"),
        ({"processes": "many"}, "auto"),
    ],
)
def test_process_settings_that_cannot_work_are_refused(cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**cfg)
