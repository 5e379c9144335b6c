"""A run's state in its checkpoints: where a run starts from (the checkpoint to resume, the projection layout and
the global batch sizes it was written with), what a checkpoint holds beyond the booster's files (ZeRO-2's fp32
masters, whole; the parameters' layout) and loading it back (on the same or another number of processes). The files
themselves: components/train/checkpoint.py; saving and rolling back: the Trainer's (components/train/trainer.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from components.common.tracking import Tracker
from components.train import checkpoint
from components.train.checkpoint import load_checkpoint
from components.train.config import TrainConfig
from components.train.data import BucketBatchSampler
from components.train.ema import EMA
from components.train.launch import Boosted
from components.train.shards import load_masters, whole_masters
from model.networks.attention import to_own_layout, to_separate_layout
from model.networks.stdit import STDiT

log = logging.getLogger(__name__)


def resume(
    source: Path | None, run: Boosted, ema: EMA, sampler: BucketBatchSampler
) -> tuple[int, int, dict | None, str | None]:
    """Load checkpoint `source` (None: a fresh start) and move the sampler past its batches; (step, batches
    consumed, guard counters, MLflow run), zeros and Nones for a fresh start."""
    if source is None:
        return 0, 0, None, None
    state = load(source, run, ema)
    sampler.set_consumed(state["consumed_batches"])
    log.info("resumed from %s at step %d", source, state["step"])
    return state["step"], state["consumed_batches"], state.get("guard"), state.get("mlflow_run_id")


def load(source: Path, run: Boosted, ema: EMA) -> dict:
    """Restore checkpoint `source` into the boosted objects and the EMA (and, under ZeRO-2, the fp32 masters, which
    the booster rebuilds from the bf16 working weights); its state.json."""
    checkpoint.check_layout(source, layout(run))
    state = load_checkpoint(source, run.booster, run.model, run.optimizer, run.scheduler, ema.model)
    ema.loaded()
    if run.plugin == "zero2":
        whole = checkpoint.read_masters(source)
        if whole is None:
            log.warning("%s holds no fp32 master weights (written before they were saved): rebuilt from the bf16 "
                        "weights, so this run is not bit for bit the one interrupted", source)  # fmt: skip
            return state
        to_own_layout(run.inner, whole)  # saved with separate q/k/v projections, as every state dict
        if missing := load_masters(run.inner, run.optimizer, whole):
            raise ValueError(f"{source}/{checkpoint.MASTERS} lacks the master weights of {missing[:3]}")
    return state


def note_world_size(saved: dict, world: int, dp_size: int, step: int, tracker: Tracker) -> None:
    """Say, in the log and in MLflow, when a run resumes on another number of processes than wrote its checkpoint."""
    before = saved.get("world_size")
    if before is None or before == world:
        return
    log.warning(
        "resuming at step %d on %d processes (%d data-parallel); the checkpoint was written by %d (%d): the global "
        "batches, their order, the weights, fp32 masters, optimizer state, EMA and schedule carry over; each "
        "process now trains 1/%d of every batch",
        step, world, dp_size, before, saved.get("data_parallel", before), dp_size,
    )  # fmt: skip
    tracker.set_tags({"world_size_changed": f"{before} -> {world} at step {step}"})


def resume_source(cfg: TrainConfig, root: Path) -> Path | None:
    """The checkpoint cfg.resume names: auto, the latest complete one in `root` (None when there is none)."""
    return None if cfg.resume == "none" else (checkpoint.latest(root) if cfg.resume == "auto" else Path(cfg.resume))


def follow_checkpoint_layout(model: STDiT, saved: dict) -> None:
    """A resumed run keeps the projection layout its checkpoint (state.json: `saved`, {} for a fresh start) wrote its
    optimizer state for (a checkpoint from before fused projections, or of a run with them off, resumes with
    separate ones)."""
    fused = checkpoint.saved_layout(saved)["fused_projections"] if saved else None
    if fused is None or fused == model.projections_fused:
        return
    model.fuse_projections() if fused else model.split_projections()
    log.info("resuming with model.fused_projections=%s, the layout its checkpoint's optimizer state holds", fused)


def layout(run: Boosted) -> dict:
    return {"fused_projections": run.inner.projections_fused}


def masters(run: Boosted) -> dict[str, torch.Tensor] | None:
    """Under ZeRO-2, the fp32 master weights whole (every rank gathers), with separate q/k/v projections as every
    state dict; None under another plugin."""
    if run.plugin != "zero2":
        return None
    whole = whole_masters(run.inner, run.optimizer)
    to_separate_layout(run.inner, whole)
    return whole
