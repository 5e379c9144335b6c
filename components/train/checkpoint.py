"""Training checkpoints: atomic step folders, the latest complete one, pruning, and what goes in a folder.

A checkpoint is written to `checkpoints/.tmp-step-NNNNNNNN/`, finished with a COMPLETE marker, then renamed to
`checkpoints/step-NNNNNNNN/`: a folder without the marker (a kill while writing) is never taken for complete.
A folder holds the boosted model and optimizer (`model.pt`, `optimizer.pt`: tensors and numbers, as the booster
writes them: the optimizer's moments whole, whatever the number of ranks), under ZeRO-2 the fp32 master weights
whole (`masters.safetensors`; the booster saves the bf16 working weights, from which the masters' low bits cannot
be rebuilt), the schedule (`scheduler.json`), the EMA weights (`ema.safetensors`), the random states of torch,
numpy and python (`rng.safetensors`, `rng.json`) and state.json (step, batches consumed, guard counters, the
parameters' layout, the world size and the global batch sizes). Everything sharded is saved whole, so a checkpoint
written by N ranks loads on M.

Checkpoints live on a shared volume, so nothing in them is unpickled: the booster's files are loaded as tensors only
(torch's `weights_only=True`), the rest is safetensors and JSON. A file that holds anything else is refused before
the first byte of it reaches a model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MARKER = "COMPLETE"
MASTERS = "masters.safetensors"  # ZeRO-2's fp32 master weights, whole
BOOSTED = ("model.pt", "optimizer.pt")  # the booster's own files (a folder of shards when saved sharded)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")  # torch.save's format, whose loading may unpickle


class UnsafeCheckpoint(ValueError):
    """A checkpoint file holds more than tensors and numbers (a pickled object); it is not loaded."""


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
    tracking_run: str | None = None, extra: dict | None = None, masters: dict[str, torch.Tensor] | None = None,
):  # fmt: skip
    """Write checkpoint `step`: every process takes part in the booster's saves, rank 0 writes the rest and commits.
    `tracking_run`: the MLflow run the stage logs into, which a resumed run goes on logging into; `extra`: more for
    state.json (the parameters' layout, which a resume must match, see `check_layout`; the world size and batch
    sizes); `masters`: ZeRO-2's fp32 master weights, whole (the booster saves the bf16 working weights)."""
    tmp = begin(root, step) if rank == 0 else root / f".tmp-step-{step:08d}"
    torch.distributed.barrier()
    booster.save_model(model, str(tmp / "model.pt"))
    booster.save_optimizer(optimizer, str(tmp / "optimizer.pt"))
    if rank == 0:
        (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict(), indent=1))
        save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
        if masters is not None:
            save_file({k: v.contiguous() for k, v in masters.items()}, tmp / MASTERS)
        save_rng(tmp)
    torch.distributed.barrier()
    if rank == 0:
        state = {"step": step, "consumed_batches": consumed, "guard": guard, "mlflow_run_id": tracking_run,
                 **(extra or {})}  # fmt: skip
        commit(root, tmp, step, state)
    torch.distributed.barrier()


def load_checkpoint(path: Path, booster, model, optimizer, scheduler, ema) -> dict:
    """Restore a checkpoint folder into the boosted objects, the EMA and the random states; its state.json.
    UnsafeCheckpoint, before anything is loaded, when one of its torch files holds more than tensors or the folder
    is of the earlier format (pickled schedule and random states)."""
    if not (path / "scheduler.json").exists() and (path / "rng.pt").exists():
        raise UnsafeCheckpoint(
            f"{path} was written by an earlier version: its schedule and random states are pickles (scheduler.pt, "
            "rng.pt), which are not loaded. Train the stage again from its start (resume=none), or from its "
            "exported model (model.init=<that stage's export>)"
        )
    for name in BOOSTED:
        check_tensors_only(path / name)
    with _weights_only_loads():
        booster.load_model(model, str(path / "model.pt"))
        booster.load_optimizer(optimizer, str(path / "optimizer.pt"))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
    ema.load_state_dict(load_file(path / "ema.safetensors"))
    load_rng(path)
    return json.loads((path / "state.json").read_text())


def read_masters(path: Path) -> dict[str, torch.Tensor] | None:
    """The whole fp32 master weights a ZeRO-2 checkpoint holds; None for one written without them."""
    return load_file(path / MASTERS) if (path / MASTERS).exists() else None


def saved_state(path: Path) -> dict:
    """Checkpoint `path`'s state.json ({} when it has none)."""
    return json.loads((path / "state.json").read_text()) if (path / "state.json").exists() else {}


def saved_layout(saved: dict) -> dict:
    """How the parameters of a checkpoint (its state.json, `saved`) were laid out for its optimizer; a checkpoint
    without the record had the only layout of its time (separate q/k/v projections)."""
    return {"fused_projections": bool(saved.get("fused_projections", False))}


def check_layout(path: Path, layout: dict) -> None:
    """A ValueError naming the setting when checkpoint `path` was written with another parameter layout than
    `layout` (its optimizer state is per parameter, so it cannot load); checkpoints without one had the defaults
    of their time (separate q/k/v projections)."""
    saved = saved_layout(saved_state(path))
    for key, value in layout.items():
        was = saved.get(key, False)
        if was != value:
            raise ValueError(
                f"checkpoint {path} was written with model.{key}={str(was).lower()} and this run has "
                f"model.{key}={str(value).lower()}: its optimizer state fits only that layout. Resume with --set "
                f"model.{key}={str(was).lower()}, or start from the stage's export (model.init=...) with resume=none"
            )


def check_tensors_only(path: Path) -> None:
    """Load every torch file at `path` (a file, or a folder of shards) as tensors only, without reading the tensors'
    data (mmap); UnsafeCheckpoint naming the file when one needs unpickling."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in TORCH_SUFFIXES)
    for file in files:
        try:
            torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UnsafeCheckpoint(
                f"{file} is not a tensors-only torch file ({first}): checkpoints are loaded without unpickling, and "
                "`t2v train` never writes such a file, so it was not loaded. Remove its checkpoint folder "
                f"({file.parent}) to resume from the one before it, or restore the folder from a copy you trust"
            ) from err


@contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every torch.load inside (the booster's own included) loads tensors only, whatever the installed torch's
    default is (before torch 2.6 it unpickles)."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def save_rng(folder: Path) -> None:
    """The random states of torch, numpy and python as tensors (rng.safetensors) and JSON (rng.json)."""
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64))}
    save_file(tensors, folder / "rng.safetensors")
    numbers = {
        "numpy": {"algorithm": algorithm, "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }  # fmt: skip
    (folder / "rng.json").write_text(json.dumps(numbers))


def load_rng(folder: Path) -> None:
    """Restore what save_rng wrote."""
    tensors = load_file(folder / "rng.safetensors")
    numbers = json.loads((folder / "rng.json").read_text())
    torch.set_rng_state(tensors["torch"])
    n = numbers["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((n["algorithm"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = numbers["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
