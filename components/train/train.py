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

The steps' parts live beside this module in components/train/: launch (processes, plugin, boost), data, build
(model, EMA), guard, checkpoint, throughput, samples and export.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from components.common.events import Steps
from components.common.latents import LatentDataset, collate
from components.common.settings import to_dict
from components.common.tracking import Tracker, git_commit
from components.common.validation import probe_loss, validation_loss
from components.train import checkpoint
from components.train.build import build_model, ema_copy, set_compile, set_recompute
from components.train.checkpoint import load_checkpoint, save_checkpoint
from components.train.config import TrainConfig
from components.train.data import BucketBatchSampler, batches, bucket_batch_sizes, datasets, latent_side
from components.train.ema import EMA
from components.train.export import export, weights_sha256
from components.train.guard import Guard
from components.train.launch import Boosted, all_sum, boost, clip_gradients, launch, plugin_name, scale_lr
from components.train.samples import sample_videos
from components.train.shards import load_masters, whole_masters
from components.train.throughput import Window
from model.attention import to_own_layout, to_separate_layout
from model.flow import training_loss
from model.parallel import new_groups
from model.stdit import STDiT

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
    rank, world, device = launch(cfg.seed)
    try:
        sp_group, dp_rank, dp_size = new_groups(cfg.sp)

        # 2. data: the processes of one sequence-parallel group read the same samples; a resumed run goes on with
        # its checkpoint's global batches, whatever the number of processes now
        source = _resume_source(cfg, ckpt_root)
        saved = checkpoint.saved_state(source) if source else {}
        train_set, val_set, meta = datasets(cfg, device)
        cfg = with_data_factors(cfg, meta)
        sampler = _sampler(cfg, train_set, dp_rank, dp_size, saved.get("batch_sizes"))

        # 3. model and EMA
        model = build_model(cfg, meta, latent_side(train_set.index)).to(device).train()
        _follow_checkpoint_layout(model, source)
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
        start, consumed, saved_guard, tracking_run = _resume(source, run, ema, sampler)
        if start == 0 and rank == 0:
            (out / "metrics.jsonl").unlink(missing_ok=True)
        tracker = _tracker(cfg, meta, rank, run.plugin, world, dp_size, tracking_run)
        _note_world_size(saved, world, dp_size, start, tracker)
        processes = {"world_size": world, "data_parallel": dp_size, "batch_sizes": sampler.batch_sizes}

        # 6. loop
        probe_batch = collate([train_set[i] for i in sampler.epoch_batches(0)[0]])
        probe_start = _probe(cfg, run.inner, probe_batch, device)
        losses: list[float] = []
        val: dict[str, float] = {}
        guard = Guard(cfg.guard, saved_guard)
        loader = batches(train_set, sampler, cfg.num_workers)
        bar = tqdm(total=cfg.max_steps, initial=start, desc=f"stage {cfg.stage}", disable=not cfg.progress or rank)
        steps = Steps(cfg.max_steps, enabled=rank == 0)  # the same count for `t2v pipeline run`'s bar
        window = Window(cfg, device, world, dp_size)
        step_times: list[float] = []
        vae = None  # loaded on first use, for sample videos
        step = start
        while step < cfg.max_steps:
            step_start = time.perf_counter()
            batch = next(loader)
            consumed += 1
            x0 = batch["latent"].to(device)
            # the global batch's mean loss, whatever its split: this rank's sum / global batch size (every batch is
            # full-size, see BucketBatchSampler), times the data-parallel size because gradients are averaged over
            # all processes (see model.parallel)
            global_batch = sampler.batch_sizes[train_set.index.bucket.iloc[batch["index"][0]]]
            scale = dp_size / global_batch
            step_loss, grad_norm, verdict = _step(cfg, run, ema, guard, batch, x0, scale, step, world, device)
            if verdict == "ok":
                losses.append(step_loss)
            else:
                log.warning("step %d skipped: %s (loss %s, grad norm %s)", step + 1, verdict, step_loss, grad_norm)
                tracker.log_metrics(guard.metrics(), step + 1)
            if guard.must_roll_back():
                step = _roll_back(cfg, ckpt_root, run, ema, guard, tracker, step)
                bar.n = step
                continue
            step_times.append(time.perf_counter() - step_start)
            window.add(x0, run.inner, batch["text"].shape[1])
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.max_steps:
                _log(cfg, tracker, window, losses, run.scheduler, grad_norm, done)
                bar.set_postfix(loss=f"{step_loss:.4f}")
            if cfg.val_every and (done % cfg.val_every == 0 or done == cfg.max_steps) and rank == 0:
                val = _validate(cfg, run.inner, val_set, tracker, done, device)
            if cfg.sample_every and done % cfg.sample_every == 0:
                whole = ema.whole()  # every rank: ZeRO-2's EMA shards are gathered
                if rank == 0:
                    prompts = val_set if len(val_set) else train_set
                    vae = _sample(cfg, whole, vae, prompts, meta, tracker, done, device)
            if cfg.ckpt_every and (done % cfg.ckpt_every == 0 or done == cfg.max_steps):
                _save(cfg, ckpt_root, run, ema, guard, done, consumed, rank, tracker.run_id, processes)
            step += 1
            bar.update(1)
            steps.update(step, step_loss)
        bar.close()

        # 7. export
        probe_end = _probe(cfg, run.inner, probe_batch, device)
        tracker.log_metrics({"probe_loss": probe_end}, cfg.max_steps)
        whole = ema.whole()
        if rank == 0:
            export(cfg, whole, meta, train_set.index, init_sha, start, val, tracker)
        torch.distributed.barrier()
        tracker.close()
        return TrainResult(
            out, out / "export", cfg.max_steps, start, losses, val, (probe_start, probe_end), tracker.run_id, step_times
        )
    finally:
        torch.distributed.destroy_process_group()


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


def _resume(
    source: Path | None, run: Boosted, ema: EMA, sampler: BucketBatchSampler
) -> tuple[int, int, dict | None, str | None]:
    """Load checkpoint `source` (None: a fresh start) and move the sampler past its batches; (step, batches
    consumed, guard counters, MLflow run), zeros and Nones for a fresh start."""
    if source is None:
        return 0, 0, None, None
    state = _load(source, run, ema)
    sampler.set_consumed(state["consumed_batches"])
    log.info("resumed from %s at step %d", source, state["step"])
    return state["step"], state["consumed_batches"], state.get("guard"), state.get("mlflow_run_id")


def _load(source: Path, run: Boosted, ema: EMA) -> dict:
    """Restore checkpoint `source` into the boosted objects and the EMA (and, under ZeRO-2, the fp32 masters, which
    the booster rebuilds from the bf16 working weights); its state.json."""
    checkpoint.check_layout(source, _layout(run))
    state = load_checkpoint(source, run.booster, run.model, run.optimizer, run.scheduler, ema.model)
    ema.loaded()
    if run.plugin == "zero2":
        whole = checkpoint.load_masters(source)
        if whole is None:
            log.warning("%s holds no fp32 master weights (written before they were saved): rebuilt from the bf16 "
                        "weights, so this run is not bit for bit the one interrupted", source)  # fmt: skip
            return state
        to_own_layout(run.inner, whole)  # saved with separate q/k/v projections, as every state dict
        if missing := load_masters(run.inner, run.optimizer, whole):
            raise ValueError(f"{source}/{checkpoint.MASTERS} lacks the master weights of {missing[:3]}")
    return state


def _note_world_size(saved: dict, world: int, dp_size: int, step: int, tracker: Tracker) -> None:
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


def with_data_factors(cfg: TrainConfig, meta: dict) -> TrainConfig:
    """`cfg` with what the data says of itself: the VAE factor the timestep shift scales latents back to pixels by."""
    factor = int(meta["encoders"]["vae_spatial"])
    return dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, spatial_compression=factor))


def _resume_source(cfg: TrainConfig, root: Path) -> Path | None:
    """The checkpoint cfg.resume names: auto, the latest complete one in `root` (None when there is none)."""
    return None if cfg.resume == "none" else (checkpoint.latest(root) if cfg.resume == "auto" else Path(cfg.resume))


def _follow_checkpoint_layout(model: STDiT, source: Path | None) -> None:
    """A resumed run keeps the projection layout its checkpoint's optimizer state was made for (a checkpoint from
    before fused projections, or of a run with them off, resumes with separate ones)."""
    fused = checkpoint.saved_layout(source).get("fused_projections") if source else None
    if fused is None or fused == model.projections_fused:
        return
    model.fuse_projections() if fused else model.split_projections()
    log.info("resuming %s with model.fused_projections=%s, the layout its optimizer state holds", source, fused)


def _layout(run: Boosted) -> dict:
    return {"fused_projections": run.inner.projections_fused}


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
    # _note_world_size)
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


# ------------------------------------------------------------------------------------------- the loop's parts


def _step(
    cfg: TrainConfig,
    run: Boosted,
    ema: EMA,
    guard: Guard,
    batch: dict,
    x0: torch.Tensor,
    scale: float,
    step: int,
    world: int,
    device: str,
) -> tuple[float, float | None, str]:
    """Step `step`: this process's loss (its sum x `scale`), backward and clipping; then, when the guard passes the
    global loss, the optimizer and EMA updates. (global loss, gradient norm, the guard's verdict)."""
    loss = (
        training_loss(
            run.model,
            x0,
            batch["text"].to(device),
            batch["text_mask"].to(device),
            cfg.flow,
            seed=cfg.seed,
            step=step,
            indices=batch["index"],
            reduction="sum",
        )
        * scale
    )
    loss = guard.plant(step, loss)
    run.booster.backward(loss, run.optimizer)
    grad_norm = clip_gradients(run.model, run.optimizer, cfg.optim.grad_clip, run.plugin)
    step_loss = all_sum(float(loss.detach()), device) / world  # the global batch's loss, on every rank
    verdict = guard.check(step_loss, grad_norm)
    if verdict == "ok":  # a skipped step moves nothing: weights, EMA, learning-rate schedule
        run.optimizer.step()
        ema.update(cfg.optim.ema_decay_at(step))
        run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss, grad_norm, verdict


def _roll_back(cfg: TrainConfig, root: Path, run: Boosted, ema: EMA, guard: Guard, tracker: Tracker, step: int) -> int:
    """Go back to the latest checkpoint with a lowered learning rate; the step to continue from."""
    target = checkpoint.latest(root)
    guard.roll_back(step + 1, target)  # raises when there is nothing to go back to, or too often
    restored = _load(target, run, ema)
    scale_lr(run.scheduler, cfg.optim.lr * guard.lr_scale)
    log.warning(
        "%d bad steps in a row at step %d: rolled back to %s (step %d), learning rate x%g; the data moves on",
        cfg.guard.max_bad_steps, step + 1, target.name, restored["step"], guard.lr_scale,
    )  # fmt: skip
    tracker.log_metrics(guard.metrics(), step + 1)
    return restored["step"]


def _log(
    cfg: TrainConfig,
    tracker: Tracker,
    window: Window,
    losses: list[float],
    scheduler,
    grad_norm: float | None,
    step: int,
) -> None:
    """Track the mean loss of the last log_every applied steps, the learning rate, the last gradient norm and the
    throughput since the last logged step."""
    metrics = {
        "loss": float(np.mean(losses[-cfg.log_every :])) if losses else float("nan"),
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": float("nan") if grad_norm is None else grad_norm,
        **window.rates(),
    }
    tracker.log_metrics(metrics, step)


def _validate(
    cfg: TrainConfig, model: STDiT, val_set: LatentDataset, tracker: Tracker, step: int, device: str
) -> dict[str, float]:
    """The validation loss per bucket (tracked when there is any). It runs on rank 0 alone, so outside the
    sequence-parallel group: the model computes every frame itself (its weights are whole on every rank)."""
    group, model.sequence_parallel = model.sequence_parallel, None
    try:
        val = validation_loss(
            model,
            val_set,
            device,
            timesteps=cfg.val_timesteps,
            max_samples=cfg.val_max_samples,
            seed=cfg.seed,
            num_train_timesteps=cfg.flow.num_train_timesteps,
        )
    finally:
        model.sequence_parallel = group
    if val:
        tracker.log_metrics(val, step)
    return val


def _sample(
    cfg: TrainConfig, ema: STDiT, vae, prompts: LatentDataset, meta: dict, tracker: Tracker, step: int, device: str
):
    """Write and track the sample videos of step `step`; returns the VAE, loaded here on first use."""
    if vae is None:
        from model.encoders import load_vae

        vae = load_vae(meta["encoders"]["vae"])
    folder = f"samples/step-{step:08d}"
    for path in sample_videos(ema, prompts, vae, cfg, Path(cfg.out_dir) / folder, device):
        tracker.log_artifact(path, folder)
    return vae


def _save(
    cfg: TrainConfig,
    root: Path,
    run: Boosted,
    ema: EMA,
    guard: Guard,
    step: int,
    consumed: int,
    rank: int,
    tracking_run: str | None,
    processes: dict,
) -> None:
    """Checkpoint step `step` (with the batches consumed, the guard's counters, the MLflow run, the processes and
    batch sizes, and under ZeRO-2 the fp32 masters), then prune old checkpoints."""
    masters = None
    if run.plugin == "zero2":
        masters = whole_masters(run.inner, run.optimizer)  # every rank gathers
        to_separate_layout(run.inner, masters)
    save_checkpoint(
        root, step, consumed, run.booster, run.model, run.optimizer, run.scheduler, ema.whole(), rank, guard.state(),
        tracking_run, {**_layout(run), **processes}, masters,
    )  # fmt: skip
    if rank == 0:
        checkpoint.prune(root, cfg.keep_last)
