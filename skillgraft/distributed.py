"""A fine-tune over several processes: DDP through ``accelerate``, one process per GPU (gloo on CPU).

:func:`fine_tune` in :mod:`skillgraft.train` comes here when ``train.processes`` asks for more than one process (or
``auto`` sees more than one GPU). Each rank is a fresh process (``spawn``: safe beside the threads of a Prefect worker)
that receives the model, tokenizer and examples, makes an ``accelerate.Accelerator`` (which joins the process group:
NCCL on GPUs, gloo on CPU) and runs the same :class:`~skillgraft.train.Trainer` as one process does, on its share of
every global batch (``batch_size`` stays the global batch; ``micro_batch_size`` adds gradient accumulation). The loss
is normalised by the global batch's answer-token count, so N ranks give the one-process gradient up to floating-point
rounding.

Nothing here writes to the store. Rank 0 writes the trained tensors (safetensors) and the record (JSON) into a private
temporary directory, and only after every rank has finished training; the parent loads them into its own model once
all processes have exited cleanly. A rank that fails makes the whole fine-tune fail with that rank's error: the
caller has nothing to store, so nothing is half-written.
"""

from __future__ import annotations

import os
import socket
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

TRAINED = "trained.safetensors"
RECORD = "record.json"
SELECTION = "selection.json"
FAILED = "failed-rank-{rank}.txt"


def process_count(requested: int | str) -> int:
    """How many processes ``train.processes`` means here: ``auto`` is one per visible CUDA GPU (1 without one)."""
    if requested == "auto":
        return max(1, torch.cuda.device_count())
    return int(requested)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fine_tune(
    model: torch.nn.Module, tokenizer, examples: Sequence, recipe, cfg, processes: int, *, new_examples: Sequence = ()
):
    """Train ``model`` with ``processes`` ranks; returns a :class:`~skillgraft.train.FineTuned` holding ``model``
    itself with the trained tensors loaded (adapters merged), as a one-process fine-tune does."""
    from safetensors.torch import load_file

    from skillgraft.recipes import Selection
    from skillgraft.refs import TrainingRecord
    from skillgraft.train import FineTuned, TrainingError

    if cfg.drift_watch is not None:
        raise TrainingError(
            f"train.drift_watch probes the model in one process; with train.processes {processes} set "
            "drift_watch: null (or processes: 1)"
        )
    if (
        cfg.device in ("cuda", "auto")
        and 0 < torch.cuda.device_count() < processes
        or (cfg.device == "cuda" and torch.cuda.device_count() < processes)
    ):  # never a silent move to CPU ranks when GPUs are there
        raise TrainingError(
            f"train.processes is {processes} but {torch.cuda.device_count()} CUDA GPUs are visible: one process per "
            "GPU; lower processes or use device: cpu (gloo)"
        )
    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and torch.cuda.device_count() < processes)
    with tempfile.TemporaryDirectory(prefix="skillgraft-ranks-") as tmp:
        port = _free_port()
        args = (processes, port, tmp, on_cpu, model, tokenizer, list(examples), list(new_examples), recipe, cfg)
        try:
            torch.multiprocessing.start_processes(_rank, args=args, nprocs=processes, start_method="spawn")
        except Exception as e:  # ProcessRaisedException / ProcessExitedException: name the rank and its error
            failed = sorted(Path(tmp).glob(FAILED.format(rank="*")))
            why = failed[0].read_text().strip().splitlines()[-1] if failed else str(e).strip().splitlines()[-1]
            raise TrainingError(
                f"distributed fine-tune failed ({processes} processes): {why}; nothing was stored"
            ) from None
        trained = load_file(str(Path(tmp) / TRAINED))
        record = TrainingRecord.model_validate_json((Path(tmp) / RECORD).read_text())
        selection = Selection.model_validate_json((Path(tmp) / SELECTION).read_text())
    state = model.state_dict()
    with torch.no_grad():
        for name, value in trained.items():
            state[name].copy_(value)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return FineTuned(model=model, selection=selection, record=record)


def _rank(rank: int, world: int, port: int, tmp: str, on_cpu: bool, model, tokenizer, examples, new_examples, recipe,
          cfg) -> None:  # fmt: skip
    """One rank: join the group through accelerate, train its shares, and (rank 0) hand the result back."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )  # fmt: skip
    if on_cpu:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback: no dependence on the host's interfaces
        threads = max(1, (os.cpu_count() or 1) // world)  # the ranks share this machine's cores
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(threads)
    try:
        _train_rank(rank, tmp, on_cpu, model, tokenizer, examples, new_examples, recipe, cfg)
    except BaseException:
        Path(tmp, FAILED.format(rank=rank)).write_text(f"rank {rank}: {traceback.format_exc()}")
        raise


def _train_rank(rank: int, tmp: str, on_cpu: bool, model, tokenizer, examples, new_examples, recipe, cfg) -> None:
    from accelerate import Accelerator
    from safetensors.torch import save_file

    from skillgraft.train import Trainer

    accelerator = Accelerator(cpu=on_cpu)
    quiet = cfg.model_copy(update={"progress": cfg.progress and rank == 0})
    trainer = Trainer(model, tokenizer, recipe, quiet, accelerator=accelerator)
    trainer.setup(examples, new_examples=new_examples)
    while not trainer.running_out and trainer.step():
        pass
    tuned = trainer.finish()
    accelerator.wait_for_everyone()  # every rank trained to the end before anything is handed back
    if accelerator.is_main_process:
        state = tuned.model.state_dict()
        trained: dict[str, Any] = {n: state[n].detach().contiguous() for n in tuned.selection.trainable}
        out = Path(tmp)
        save_file(trained, str(out / (TRAINED + ".part")))
        (out / (TRAINED + ".part")).rename(out / TRAINED)
        (out / RECORD).write_text(tuned.record.model_dump_json())
        (out / SELECTION).write_text(tuned.selection.model_dump_json())
    accelerator.wait_for_everyone()
    accelerator.end_training()
