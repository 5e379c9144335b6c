"""Training checkpoints: atomic step folders, the latest complete one, pruning, and what goes in a folder.

A checkpoint is written to `checkpoints/.tmp-step-NNNNNNNN/`, finished with a COMPLETE marker, then renamed to
`checkpoints/step-NNNNNNNN/`: a folder without the marker (a kill while writing) is never taken for complete.
A folder holds the boosted model and optimizer, the schedule, the EMA weights, the random states of torch, numpy
and python, and state.json (step, batches consumed, guard counters).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MARKER = "COMPLETE"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def begin(root: Path, step: int) -> Path:
    tmp = root / f".tmp-step-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(root: Path, tmp: Path, step: int, state: dict) -> Path:
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    (tmp / MARKER).write_text("")
    final = step_dir(root, step)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def latest(root: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    if not root.exists():
        return None
    done = [p for p in root.glob("step-*") if (p / MARKER).exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; remove older ones and leftovers of killed writes."""
    done = sorted((p for p in root.glob("step-*") if (p / MARKER).exists()), key=lambda p: int(p.name.split("-")[1]))
    for old in done[: max(0, len(done) - keep_last)]:
        shutil.rmtree(old)
    for leftover in root.glob(".tmp-step-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(
    root: Path, step: int, consumed: int, booster, model, optimizer, scheduler, ema, rank: int, guard: dict,
    tracking_run: str | None = None,
):  # fmt: skip
    """Write checkpoint `step`: every process takes part in the booster's saves, rank 0 writes the rest and commits.
    `tracking_run`: the MLflow run the stage logs into, which a resumed run goes on logging into."""
    tmp = begin(root, step) if rank == 0 else root / f".tmp-step-{step:08d}"
    torch.distributed.barrier()
    booster.save_model(model, str(tmp / "model.pt"))
    booster.save_optimizer(optimizer, str(tmp / "optimizer.pt"))
    if rank == 0:
        booster.save_lr_scheduler(scheduler, str(tmp / "scheduler.pt"))
        save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        torch.save(rng, tmp / "rng.pt")
    torch.distributed.barrier()
    if rank == 0:
        state = {"step": step, "consumed_batches": consumed, "guard": guard, "mlflow_run_id": tracking_run}
        commit(root, tmp, step, state)
    torch.distributed.barrier()


def load_checkpoint(path: Path, booster, model, optimizer, scheduler, ema) -> dict:
    """Restore a checkpoint folder into the boosted objects, the EMA and the random states; its state.json."""
    booster.load_model(model, str(path / "model.pt"))
    booster.load_optimizer(optimizer, str(path / "optimizer.pt"))
    booster.load_lr_scheduler(scheduler, str(path / "scheduler.pt"))
    ema.load_state_dict(load_file(path / "ema.safetensors"))
    rng = torch.load(path / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    return json.loads((path / "state.json").read_text())
