"""Train one stage of STDiT on precomputed latents with the ColossalAI Booster.

train(cfg):
  1. processes: colossalai.launch_from_torch (torchrun's environment, or one local process)
  2. data: the stage's samples (1: images, 2: videos, 3: all above the score thresholds), bucket batches
  3. model: from scratch, from PixArt, or the previous stage's export; EMA copy
  4. boost: ddp (CPU, or GPU fp32) or zero2 (LowLevelZero, bf16, GPU) with AdamW and linear warmup
  5. resume: the latest complete checkpoint in out_dir (a retried or pre-empted job continues by itself)
  6. loop: rectified-flow loss with per-sample draws from (seed, step, sample index); clip; step; EMA;
     metrics, validation loss per bucket, checkpoints
  7. export: the EMA model with save_pretrained, for the next stage and for evaluation

The steps' parts live beside this module in components/train/: launch (processes, plugin, boost, gradient norm),
data, build (model, speed switches, EMA), trainer (the loop's parts, held once: step, log, validate, sample, save,
roll back), guard, state (resume and load: the run in its checkpoints), checkpoint (the files), shards
(ZeRO-2's flat shards), throughput, samples and export.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from components.common.events import Steps
from components.common.latents import collate
from components.common.settings import to_dict
from components.common.tracking import Tracker, git_commit
from components.common.validation import probe_loss
from components.train import checkpoint, state
from components.train.build import build_model, ema_copy, set_compile, set_recompute
from components.train.config import TrainConfig
from components.train.data import BucketBatchSampler, batches, bucket_batch_sizes, datasets, latent_side
from components.train.ema import EMA
from components.train.export import export, weights_sha256
from components.train.guard import Guard
from components.train.launch import boost, launched, plugin_name
from components.train.pace import Pace
from components.train.throughput import Window
from components.train.trainer import Trainer
from model.networks.parallel import new_groups
from model.networks.stdit import STDiT

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: Path
    export_dir: Path
    steps: int
    resumed_from: int
    losses: list[float]
    val_loss: dict[str, float]
    probe_loss: tuple[float, float]  # on one fixed batch, before and after this run's steps
    run_id: str | None
    step_times: list[float]  # seconds per training step, tracking and checkpoints included


def train(cfg: TrainConfig) -> TrainResult:
    """Train one stage; see the module docstring."""
    out = Path(cfg.out_dir)
    ckpt_root = out / "checkpoints"

    # 1. processes
    with launched(cfg.seed) as (rank, world, device):
        sp_group, dp_rank, dp_size = new_groups(cfg.sp)

        # 2. data: the processes of one sequence-parallel group read the same samples; a resumed run goes on with
        # its checkpoint's global batches, whatever the number of processes now
        source = state.resume_source(cfg, ckpt_root)
        saved = checkpoint.saved_state(source) if source else {}
        train_set, val_set, meta = datasets(cfg, device)
        cfg = with_data_factors(cfg, meta)
        sampler = _sampler(cfg, train_set, dp_rank, dp_size, saved.get("batch_sizes"))

        # 3. model and EMA
        model = build_model(cfg, meta, latent_side(train_set.index)).to(device).train()
        state.follow_checkpoint_layout(model, saved)
        model.sequence_parallel = sp_group
        init_sha = weights_sha256(model)
        ema_model = ema_copy(model, device)  # fp32, from the weights before the plugin casts them
        text_tokens = meta["encoders"]["max_text_tokens"]
        shapes = _bucket_shapes(train_set.index, sampler, dp_size)
        set_compile(model, cfg)
        set_recompute(model, cfg, shapes, text_tokens, device, plugin_name(cfg.plugin), dp_size)

        # 4. boost
        run = boost(model, cfg)
        ema = EMA(ema_model, run.inner, run.optimizer, run.plugin)

        # 5. resume; then tracking, with a fresh local metrics log for a fresh run (a resumed one appends)
        start, consumed, saved_guard, tracking_run = state.resume(source, run, ema, sampler)
        if start == 0 and rank == 0:
            (out / "metrics.jsonl").unlink(missing_ok=True)
        tracker = _tracker(cfg, meta, rank, run.plugin, world, dp_size, tracking_run)
        state.note_world_size(saved, world, dp_size, start, tracker)

        # 6. loop
        probe_batch = collate([train_set[i] for i in sampler.epoch_batches(0)[0]])
        probe_start = _probe(cfg, run.inner, probe_batch, device)
        trainer = Trainer(cfg, run, ema, Guard(cfg.guard, saved_guard), tracker, sampler, train_set, val_set, meta,
                          rank=rank, world=world, dp_size=dp_size, device=device, ckpt_root=ckpt_root,
                          consumed=consumed, window=Window(cfg, device, world, dp_size),
                          pace=Pace(cfg.expected_tokens_per_s, cfg.slow_factor, cfg.stage, out) if rank == 0 else None,
                          first_log=min(cfg.max_steps, (start // cfg.log_every + 1) * cfg.log_every))  # fmt: skip
        loader = batches(train_set, sampler, cfg.num_workers)
        bar = tqdm(total=cfg.max_steps, initial=start, desc=f"stage {cfg.stage}", disable=not cfg.progress or rank)
        steps = Steps(cfg.max_steps, enabled=rank == 0)  # the same count for `t2v pipeline run`'s bar
        step_times: list[float] = []
        step = start
        while step < cfg.max_steps:
            step_start = time.perf_counter()
            batch = next(loader)
            step_loss, grad_norm = trainer.step(batch, step)
            if trainer.guard.must_roll_back():
                step = bar.n = trainer.roll_back(step)
                continue
            step_times.append(time.perf_counter() - step_start)
            trainer.count(batch)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.max_steps:
                trainer.log(done, grad_norm)
                bar.set_postfix(loss=f"{step_loss:.4f}")
            if cfg.val_every and (done % cfg.val_every == 0 or done == cfg.max_steps) and rank == 0:
                trainer.validate(done)
            if cfg.sample_every and done % cfg.sample_every == 0:
                trainer.sample(done)
            if cfg.ckpt_every and (done % cfg.ckpt_every == 0 or done == cfg.max_steps):
                trainer.save(done)
            step += 1
            bar.update(1)
            steps.update(step, step_loss)
        bar.close()

        # 7. export
        probe_end = _probe(cfg, run.inner, probe_batch, device)
        tracker.log_metrics({"probe_loss": probe_end}, cfg.max_steps)
        whole = ema.whole()
        if rank == 0:
            export(cfg, whole, meta, train_set.index, init_sha, start, trainer.val, tracker)
        torch.distributed.barrier()
        tracker.close(timeout_s=cfg.tracking_wait_s)
        return TrainResult(out, out / "export", cfg.max_steps, start, trainer.losses, trainer.val,
                           (probe_start, probe_end), tracker.run_id, step_times)  # fmt: skip


# --------------------------------------------------------------------------------------------- train's steps


def _sampler(
    cfg: TrainConfig, train_set, dp_rank: int, dp_size: int, saved: dict[str, int] | None = None
) -> BucketBatchSampler:
    """This process's bucket batches: the precompute's batch sizes, or the bucket preset's (cfg.buckets); those of
    the checkpoint a run resumes (`saved`, global), so that its batches go on as they were."""
    batch_sizes = bucket_batch_sizes(cfg, train_set.index, dp_size)
    if saved is not None:
        if batch_sizes is not None and batch_sizes != saved:
            log.warning("resuming with the checkpoint's global batch sizes %s, not %s", saved, batch_sizes)
        batch_sizes = saved
    elif batch_sizes is not None:
        log.info("batch sizes from %s: %s (global, %d data-parallel processes)", cfg.buckets, batch_sizes, dp_size)
    return BucketBatchSampler(train_set.index, seed=cfg.seed, rank=dp_rank, world_size=dp_size, batch_sizes=batch_sizes)


def _bucket_shapes(index, sampler: BucketBatchSampler, dp_size: int) -> list[dict]:
    """Per bucket: this process's batch and the latent size ({batch, frames, height, width}), for the memory model."""
    shapes = []
    for bucket, size in sampler.batch_sizes.items():
        _, frames, height, width = index.latent_shape[index.bucket == bucket].iloc[0]
        shapes.append({"batch": -(-size // dp_size), "frames": int(frames), "height": int(height), "width": int(width)})
    return shapes


def with_data_factors(cfg: TrainConfig, meta: dict) -> TrainConfig:
    """`cfg` with what the data says of itself: the VAE factor the timestep shift scales latents back to pixels by."""
    factor = int(meta["encoders"]["vae_spatial"])
    return dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, spatial_compression=factor))


def _tracker(
    cfg: TrainConfig, meta: dict, rank: int, plugin: str, world: int, dp_size: int, resumed: str | None
) -> Tracker:
    """The run's tracker (MLflow and the local metrics log on rank 0, nothing elsewhere), its tags and params; a
    resumed stage goes on in the MLflow run its checkpoint names."""
    out = Path(cfg.out_dir)
    tracker = Tracker(
        cfg.tracking_uri if rank == 0 else None,
        cfg.experiment,
        f"stage{cfg.stage}",
        tags={
            "stage": str(cfg.stage),
            "manifest_sha256": meta.get("manifest_sha256", ""),
            "precompute_key": meta.get("key", ""),
            **_git_tags(),
        },
        system_metrics_s=cfg.system_metrics_every or None,
        local_log=out / "metrics.jsonl" if rank == 0 else None,
        run_id=resumed,
    )
    # the processes of the run's start (MLflow keeps a param's first value: a resume on others is a tag, see
    # state.note_world_size)
    processes = {} if resumed else {"world_size": world, "data_parallel": dp_size}
    tracker.log_params({**to_dict(cfg), "data.meta": meta.get("encoders", {}), "plugin.resolved": plugin,
                        **processes})  # fmt: skip
    return tracker


def _git_tags() -> dict[str, str]:
    commit = git_commit()
    return {"git_commit": commit} if commit else {}


def _probe(cfg: TrainConfig, model: STDiT, batch: dict, device: str) -> float:
    """The loss on the fixed probe batch, with the run's seeded draws."""
    return probe_loss(model, batch, device, seed=cfg.seed, num_train_timesteps=cfg.flow.num_train_timesteps)
