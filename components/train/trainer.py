"""The training loop's parts, held once: `Trainer` keeps what every step reads (the settings, the boosted model and
optimizer, the EMA, the guard, the tracker, the data) so that train()'s loop reads as its steps:

    loss, grad_norm = trainer.step(batch, step)
    trainer.roll_back(step) / trainer.count(batch) / trainer.log(done, grad_norm) / trainer.validate(done) /
    trainer.sample(done) / trainer.save(done)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.common.latents import LatentDataset
from components.common.tracking import Tracker
from components.common.validation import validation_loss
from components.train import checkpoint, state
from components.train.checkpoint import save_checkpoint
from components.train.config import TrainConfig
from components.train.data import BucketBatchSampler
from components.train.ema import EMA
from components.train.guard import Guard
from components.train.launch import Boosted, all_sum, clip_gradients, scale_lr
from components.train.pace import Pace
from components.train.samples import sample_videos
from components.train.throughput import Window
from model.schedulers.flow import training_loss

log = logging.getLogger(__name__)


@dataclass
class Trainer:
    cfg: TrainConfig
    run: Boosted
    ema: EMA
    guard: Guard
    tracker: Tracker
    sampler: BucketBatchSampler
    train_set: LatentDataset
    val_set: LatentDataset
    meta: dict
    rank: int
    world: int
    dp_size: int
    device: str
    ckpt_root: Path
    consumed: int  # batches taken from the sampler, skipped steps' included
    window: Window
    losses: list[float] = field(default_factory=list)  # the applied steps' global losses
    val: dict[str, float] = field(default_factory=dict)  # the latest validation losses
    vae: object = None  # loaded on first use, for sample videos
    pace: Pace | None = None  # rank 0's watch on the throughput against the recipe's
    first_log: int = 0  # the first logged step of this run (its window holds the warm-up)

    @property
    def processes(self) -> dict:
        """What a checkpoint records of the processes that wrote it."""
        return {"world_size": self.world, "data_parallel": self.dp_size, "batch_sizes": self.sampler.batch_sizes}

    def step(self, batch: dict, step: int) -> tuple[float, float | None]:
        """Step `step` on `batch`: this process's loss, backward and clipping; then, when the guard passes the global
        loss, the optimizer and EMA updates. (global loss, gradient norm)"""
        cfg, run = self.cfg, self.run
        self.consumed += 1
        x0 = batch["latent"].to(self.device)
        # the global batch's mean loss, whatever its split: this rank's sum / global batch size (every batch is
        # full-size, see BucketBatchSampler), times the data-parallel size because gradients are averaged over all
        # processes (see model.networks.parallel)
        global_batch = self.sampler.batch_sizes[self.train_set.index.bucket.iloc[batch["index"][0]]]
        scale = self.dp_size / global_batch
        loss = (
            training_loss(
                run.model,
                x0,
                batch["text"].to(self.device),
                batch["text_mask"].to(self.device),
                cfg.flow,
                seed=cfg.seed,
                step=step,
                indices=batch["index"],
                reduction="sum",
            )
            * scale
        )
        loss = self.guard.plant(step, loss)
        run.booster.backward(loss, run.optimizer)
        grad_norm = clip_gradients(run.model, run.optimizer, cfg.optim.grad_clip, run.plugin)
        step_loss = all_sum(float(loss.detach()), self.device) / self.world  # the global batch's loss, every rank
        verdict = self.guard.check(step_loss, grad_norm)
        if verdict == "ok":  # a skipped step moves nothing: weights, EMA, learning-rate schedule
            run.optimizer.step()
            self.ema.update(cfg.optim.ema_decay_at(step))
            run.scheduler.step()
            self.losses.append(step_loss)
        else:
            log.warning("step %d skipped: %s (loss %s, grad norm %s)", step + 1, verdict, step_loss, grad_norm)
            self.tracker.log_metrics(self.guard.metrics(), step + 1)
        run.optimizer.zero_grad(set_to_none=True)
        return step_loss, grad_norm

    def count(self, batch: dict) -> None:
        """Count a step that stands (not rolled back) in the throughput window."""
        self.window.add(batch["latent"], self.run.inner, batch["text"].shape[1])

    def roll_back(self, step: int) -> int:
        """Go back to the latest checkpoint with a lowered learning rate; the step to continue from."""
        cfg, guard = self.cfg, self.guard
        target = checkpoint.latest(self.ckpt_root)
        guard.roll_back(step + 1, target)  # raises when there is nothing to go back to, or too often
        restored = state.load(target, self.run, self.ema)
        scale_lr(self.run.scheduler, cfg.optim.lr * guard.lr_scale)
        log.warning(
            "%d bad steps in a row at step %d: rolled back to %s (step %d), learning rate x%g; the data moves on",
            cfg.guard.max_bad_steps, step + 1, target.name, restored["step"], guard.lr_scale,
        )  # fmt: skip
        self.tracker.log_metrics(guard.metrics(), step + 1)
        return restored["step"]

    def log(self, step: int, grad_norm: float | None) -> None:
        """Track the mean loss of the last log_every applied steps, the learning rate, the last gradient norm and
        the throughput since the last logged step."""
        every = self.cfg.log_every
        metrics = {
            "loss": float(np.mean(self.losses[-every:])) if self.losses else float("nan"),
            "lr": self.run.scheduler.get_last_lr()[0],
            "grad_norm": float("nan") if grad_norm is None else grad_norm,
            **self.window.rates(),
        }
        self.tracker.log_metrics(metrics, step)
        slow_before = self.pace is None or self.pace.said
        if not slow_before and (said := self.pace.observe(step, metrics.get("tokens_per_s"), self.first_log)):
            self.tracker.set_tags({"slow_run": said})

    def validate(self, step: int) -> dict[str, float]:
        """The validation loss per bucket (tracked when there is any). It runs on rank 0 alone, so outside the
        sequence-parallel group: the model computes every frame itself (its weights are whole on every rank)."""
        cfg, model = self.cfg, self.run.inner
        group, model.sequence_parallel = model.sequence_parallel, None
        try:
            self.val = validation_loss(
                model,
                self.val_set,
                self.device,
                timesteps=cfg.val_timesteps,
                max_samples=cfg.val_max_samples,
                seed=cfg.seed,
                num_train_timesteps=cfg.flow.num_train_timesteps,
            )
        finally:
            model.sequence_parallel = group
        if self.val:
            self.tracker.log_metrics(self.val, step)
        return self.val

    def sample(self, step: int) -> None:
        """Write and track the sample videos of step `step` from the EMA model (every rank gathers ZeRO-2's EMA
        shards; rank 0 writes), loading the VAE on first use."""
        whole = self.ema.whole()
        if self.rank:
            return
        if self.vae is None:
            from model.weights.encoders import load_vae

            self.vae = load_vae(self.meta["encoders"]["vae"])
        prompts = self.val_set if len(self.val_set) else self.train_set
        folder = f"samples/step-{step:08d}"
        for path in sample_videos(whole, prompts, self.vae, self.cfg, Path(self.cfg.out_dir) / folder, self.device):
            self.tracker.log_artifact(path, folder)

    def save(self, step: int) -> None:
        """Checkpoint step `step` (with the batches consumed, the guard's counters, the MLflow run, the parameters'
        layout, the processes and batch sizes, and under ZeRO-2 the fp32 masters), then prune old checkpoints."""
        run = self.run
        masters = state.masters(run)
        save_checkpoint(
            self.ckpt_root, step, self.consumed, run.booster, run.model, run.optimizer, run.scheduler, self.ema.whole(),
            self.rank, self.guard.state(), self.tracker.run_id, {**state.layout(run), **self.processes}, masters,
        )  # fmt: skip
        if self.rank == 0:
            checkpoint.prune(self.ckpt_root, self.cfg.keep_last)
