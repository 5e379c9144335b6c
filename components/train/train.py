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
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from components.common.latents import EncodingDataset, LatentDataset, collate, plan, resolve
from components.common.settings import read_yaml, to_dict
from components.common.tracking import Tracker, git_commit, write_plots
from components.common.validation import probe_loss, validation_loss
from components.train import checkpoint
from components.train.config import STAGE_FRAMES, GuardConfig, TrainConfig
from components.train.data import BucketBatchSampler, preset_batch_sizes
from model.flow import training_loss
from model.parallel import new_groups
from model.pipeline import build_pipeline, to_frames
from model.stdit import STDiT, preset_config

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


# ------------------------------------------------------------------------------------------------- processes


def launch(seed: int) -> tuple[int, int, str]:
    """Initialise the process group through ColossalAI; (rank, world size, device)."""
    import colossalai

    if "RANK" not in os.environ:  # one local process: give it torchrun's environment
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    cuda = torch.cuda.is_available()
    colossalai.launch_from_torch(backend="nccl" if cuda else "gloo", seed=seed, verbose=False)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    return rank, world, device


def make_plugin(name: str, grad_clip: float):
    from colossalai.booster.plugin import LowLevelZeroPlugin, TorchDDPPlugin

    if name == "auto":
        name = "zero2" if torch.cuda.is_available() else "ddp"
    if name == "zero2":
        if not torch.cuda.is_available():
            raise ValueError("plugin zero2 (LowLevelZero) needs CUDA; use plugin=ddp on CPU")
        return LowLevelZeroPlugin(stage=2, precision="bf16", max_norm=grad_clip), name
    # images leave the temporal branch unused, and batches without dropped captions the null caption
    return TorchDDPPlugin(find_unused_parameters=True), name


# ------------------------------------------------------------------------------------------------------ data


def select(index, cfg: TrainConfig):
    """The stage's samples: by frame count, and (stage 3) by minimum scores."""
    frames = STAGE_FRAMES[cfg.stage] if cfg.frames == "auto" else cfg.frames
    keep = np.ones(len(index), bool)
    if frames == "images":
        keep &= index.num_frames.to_numpy() == 1
    elif frames == "videos":
        keep &= index.num_frames.to_numpy() > 1
    for column, minimum in cfg.subset.items():
        if column not in index.columns:
            raise ValueError(
                f"subset threshold on {column!r}, which the precomputed index lacks: {list(index.columns)}"
            )
        keep &= index[column].to_numpy() >= minimum
    return keep


def datasets(cfg: TrainConfig, device: str):
    """(train, val, meta): precomputed samples, or (cfg.online) samples encoded as they are read."""
    if cfg.online is None:
        folder = resolve(cfg.data)
        meta = json.loads((folder / "meta.json").read_text())
        train, val = LatentDataset(folder, split="train"), LatentDataset(folder, split="val")
    else:
        import hashlib

        import pandas as pd

        from model.encoders import TextEncoder, describe, load_vae

        on = cfg.online
        manifest_path = Path(on.manifest)
        if not manifest_path.exists():
            raise ValueError(f"online.manifest {manifest_path} not found; run `t2v caption` first")
        planned = plan(pd.read_parquet(manifest_path), on)
        vae, text_encoder = load_vae(on.vae, device), TextEncoder(on.text_encoder, on.max_text_tokens, device)
        train, val = (EncodingDataset(planned, vae, text_encoder, split) for split in ("train", "val"))
        meta = {
            "latent_channels": vae.latent_channels,
            "encoders": describe(vae, text_encoder),
            "manifest_sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
            "key": "online",
        }
    # one canonical order (by clip id), so positions, batches and draws do not depend on how the data was stored
    train.index = train.index[select(train.index, cfg)].sort_values("clip_id").reset_index(drop=True)
    val.index = val.index[select(val.index, cfg)].sort_values("clip_id").reset_index(drop=True)
    if len(train) == 0:
        raise ValueError(
            f"no training samples in {cfg.data} for stage {cfg.stage} (frames={cfg.frames}, subset={cfg.subset})"
        )
    return train, val, meta


# ----------------------------------------------------------------------------------------------------- model


def build_model(cfg: TrainConfig, meta: dict, latent_side: int) -> STDiT:
    init = cfg.model.init
    if init.startswith("pixart:"):
        from model.pixart_import import stdit_from_pixart

        model = stdit_from_pixart(init.split(":", 1)[1], **cfg.model.overrides)
    elif init != "scratch":
        if not (Path(init) / "config.json").exists():
            raise ValueError(f"model.init={init!r}: not 'scratch', 'pixart:<id>' or an STDiT export folder")
        model = STDiT.from_pretrained(init)
    else:
        config = preset_config(
            cfg.model.preset,
            in_channels=meta["latent_channels"],
            caption_channels=meta["encoders"]["text_channels"],
            caption_max_length=meta["encoders"]["max_text_tokens"],
            sample_size=latent_side,
        )
        model = STDiT(**{**config, **cfg.model.overrides})
    if model.config.in_channels != meta["latent_channels"]:
        raise ValueError(
            f"model takes {model.config.in_channels} latent channels, the data has {meta['latent_channels']}; "
            "precompute with the VAE the model was trained on"
        )
    if cfg.stage == 2 and _export_stage(init) == 1:
        model.zero_temporal_output()  # video training starts as the image model applied frame by frame
    if cfg.model.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model


def _export_stage(init: str) -> int | None:
    state = Path(init) / "train_state.json"
    return json.loads(state.read_text()).get("stage") if state.exists() else None


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of the weights (names, shapes, bytes), to link each stage's start to the previous export."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.mul_(decay).add_(p.detach().float(), alpha=1 - decay)


# ------------------------------------------------------------------------------------------------ validation


@torch.no_grad()
def sample_videos(model: STDiT, prompts: LatentDataset, vae, cfg: TrainConfig, folder: Path, device: str) -> list[Path]:
    """Generate from the first `sample_count` held-out captions (their latent shapes), decode, write mp4s."""
    from components.common.video import write_video
    from model.flow import sample

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(min(cfg.sample_count, len(prompts))):
        item = collate([prompts[i]])
        latents = sample(
            model,
            tuple(item["latent"].shape),
            item["text"].to(device),
            item["text_mask"].to(device),
            cfg=cfg.flow,
            num_steps=cfg.sample_steps,
            guidance_scale=cfg.guidance_scale,
            generator=torch.Generator().manual_seed(cfg.seed + i),
        )
        frames = to_frames(vae.decode(latents.float().cpu())[0])
        path = folder / f"sample_{i}.mp4"
        write_video(path, list(frames), fps=8)
        written.append(path)
    model.train()
    return written


# ----------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    root: Path, step: int, consumed: int, booster, model, optimizer, scheduler, ema, rank: int, guard: dict
):
    tmp = checkpoint.begin(root, step) if rank == 0 else root / f".tmp-step-{step:08d}"
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
        checkpoint.commit(root, tmp, step, {"step": step, "consumed_batches": consumed, "guard": guard})
    torch.distributed.barrier()


def load_checkpoint(path: Path, booster, model, optimizer, scheduler, ema) -> dict:
    booster.load_model(model, str(path / "model.pt"))
    booster.load_optimizer(optimizer, str(path / "optimizer.pt"))
    booster.load_lr_scheduler(scheduler, str(path / "scheduler.pt"))
    ema.load_state_dict(load_file(path / "ema.safetensors"))
    rng = torch.load(path / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    return json.loads((path / "state.json").read_text())


# ------------------------------------------------------------------------------------------------------ train


def train(cfg: TrainConfig) -> TrainResult:
    """Train one stage; see the module docstring."""
    from colossalai.booster import Booster

    out = Path(cfg.out_dir)
    ckpt_root = out / "checkpoints"

    # 1. processes
    rank, world, device = launch(cfg.seed)
    try:
        sp_group, dp_rank, dp_size = new_groups(cfg.sp)
        # 2. data: the processes of one sequence-parallel group read the same samples
        train_set, val_set, meta = datasets(cfg, device)
        batch_sizes = None
        if cfg.buckets is not None:
            preset = cfg.buckets if isinstance(cfg.buckets, dict) else read_yaml(cfg.buckets, "bucket preset")
            batch_sizes = preset_batch_sizes(train_set.index, preset, dp_size)
            log.info("batch sizes from %s: %s (global, %d data-parallel processes)", cfg.buckets, batch_sizes, dp_size)
        sampler = BucketBatchSampler(
            train_set.index, seed=cfg.seed, rank=dp_rank, world_size=dp_size, batch_sizes=batch_sizes
        )
        loader = torch.utils.data.DataLoader(
            train_set, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers
        )
        latent_side = int(max(max(s[-2:]) for s in train_set.index.latent_shape))

        # 3. model and EMA
        model = build_model(cfg, meta, latent_side).to(device).train()
        model.sequence_parallel = sp_group
        init_sha = weights_sha256(model)
        ema = STDiT.from_config(model.config).to(device).eval().requires_grad_(False)
        ema.load_state_dict(model.state_dict())
        ema.float()

        # 4. boost
        opt = cfg.optim
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay
        )
        warmup = max(1, opt.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        plugin, plugin_name = make_plugin(cfg.plugin, opt.grad_clip)
        booster = Booster(plugin=plugin)
        model, optimizer, _, _, scheduler = booster.boost(model, optimizer, lr_scheduler=scheduler)
        inner: STDiT = model.unwrap()

        # 5. resume
        start, consumed = 0, 0
        source = (
            None
            if cfg.resume == "none"
            else (checkpoint.latest(ckpt_root) if cfg.resume == "auto" else Path(cfg.resume))
        )
        if source is not None:
            state = load_checkpoint(source, booster, model, optimizer, scheduler, ema)
            start, consumed = state["step"], state["consumed_batches"]
            sampler.set_consumed(consumed)
            log.info("resumed from %s at step %d", source, start)
        if start == 0 and rank == 0:  # a fresh run starts a fresh local metrics log (a resumed one appends)
            (out / "metrics.jsonl").unlink(missing_ok=True)

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
        )
        tracker.log_params({**to_dict(cfg), "data.meta": meta.get("encoders", {}), "plugin.resolved": plugin_name,
                            "world_size": world, "data_parallel": dp_size})  # fmt: skip

        # 6. loop
        probe_batch = collate([train_set[i] for i in sampler.epoch_batches(0)[0]])
        probe_start = probe_loss(
            inner, probe_batch, device, seed=cfg.seed, num_train_timesteps=cfg.flow.num_train_timesteps
        )
        losses: list[float] = []
        val: dict[str, float] = {}
        guard = Guard(cfg.guard, state.get("guard") if source is not None else None)
        batches = iter(loader)
        bar = tqdm(total=cfg.max_steps, initial=start, desc=f"stage {cfg.stage}", disable=not cfg.progress or rank)
        tick = time.perf_counter()
        step_times: list[float] = []
        vae = None  # loaded on first use, for sample videos
        window_samples = window_tokens = window_flops = 0
        step = start
        while step < cfg.max_steps:
            step_start = time.perf_counter()
            batch = next(batches)
            consumed += 1
            x0 = batch["latent"].to(device)
            # the global batch's mean loss, whatever its split: this rank's sum / global batch size (every batch is
            # full-size, see BucketBatchSampler), times the data-parallel size because gradients are averaged over
            # all processes (see model.parallel)
            global_batch = sampler.batch_sizes[train_set.index.bucket.iloc[batch["index"][0]]]
            loss = training_loss(
                model,
                x0,
                batch["text"].to(device),
                batch["text_mask"].to(device),
                cfg.flow,
                seed=cfg.seed,
                step=step,
                indices=batch["index"],
                reduction="sum",
            ) * (dp_size / global_batch)
            loss = guard.plant(step, loss)
            booster.backward(loss, optimizer)
            grad_norm = _clip(model, opt.grad_clip, plugin_name)
            step_loss = _all_sum(float(loss.detach()), device) / world  # the global batch's loss, on every rank
            verdict = guard.check(step_loss, grad_norm)
            if verdict == "ok":
                optimizer.step()
                update_ema(ema, inner, opt.ema_decay)
                losses.append(step_loss)
            else:
                log.warning("step %d skipped: %s (loss %s, grad norm %s)", step + 1, verdict, step_loss, grad_norm)
                tracker.log_metrics(guard.metrics(), step + 1)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if guard.must_roll_back():
                target = checkpoint.latest(ckpt_root)
                guard.roll_back(step + 1, target)  # raises when there is nothing to go back to, or too often
                restored = load_checkpoint(target, booster, model, optimizer, scheduler, ema)
                _scale_lr(scheduler, opt.lr * guard.lr_scale)
                log.warning(
                    "%d bad steps in a row at step %d: rolled back to %s (step %d), learning rate x%g; the data "
                    "moves on",
                    cfg.guard.max_bad_steps, step + 1, target.name, restored["step"], guard.lr_scale,
                )  # fmt: skip
                tracker.log_metrics(guard.metrics(), step + 1)
                step = restored["step"]
                bar.n = step
                continue
            step_times.append(time.perf_counter() - step_start)
            window_samples += x0.shape[0] * dp_size
            window_tokens += tokens_of(x0, inner) * dp_size
            if device.startswith("cuda"):  # only MFU needs it, and MFU is only reported on GPUs
                window_flops += train_flops(inner, x0, batch["text"].shape[1], cfg) * dp_size
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
                elapsed, tick = time.perf_counter() - tick, time.perf_counter()
                metrics = {
                    "loss": float(np.mean(losses[-cfg.log_every :])) if losses else float("nan"),
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float("nan") if grad_norm is None else grad_norm,
                    "samples_per_s": window_samples / max(elapsed, 1e-9),
                    "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                    "peak_memory_gb": peak_memory_gb(device),
                }
                if device.startswith("cuda") and (peak := peak_tflops(device)):
                    metrics["mfu"] = window_flops / max(elapsed, 1e-9) / (peak * 1e12 * world)
                tracker.log_metrics(metrics, step + 1)
                window_samples = window_tokens = window_flops = 0
                bar.set_postfix(loss=f"{step_loss:.4f}")
            if cfg.val_every and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.max_steps) and rank == 0:
                val = validation_loss(
                    inner,
                    val_set,
                    device,
                    timesteps=cfg.val_timesteps,
                    max_samples=cfg.val_max_samples,
                    seed=cfg.seed,
                    num_train_timesteps=cfg.flow.num_train_timesteps,
                )
                if val:
                    tracker.log_metrics(val, step + 1)
            if cfg.sample_every and (step + 1) % cfg.sample_every == 0 and rank == 0:
                if vae is None:
                    from model.encoders import load_vae

                    vae = load_vae(meta["encoders"]["vae"])
                prompts = val_set if len(val_set) else train_set
                for path in sample_videos(ema, prompts, vae, cfg, out / "samples" / f"step-{step + 1:08d}", device):
                    tracker.log_artifact(path, f"samples/step-{step + 1:08d}")
            if cfg.ckpt_every and ((step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.max_steps):
                save_checkpoint(
                    ckpt_root, step + 1, consumed, booster, model, optimizer, scheduler, ema, rank, guard.state()
                )
                if rank == 0:
                    checkpoint.prune(ckpt_root, cfg.keep_last)
            step += 1
            bar.update(1)
        bar.close()

        # 7. export
        probe_end = probe_loss(
            inner, probe_batch, device, seed=cfg.seed, num_train_timesteps=cfg.flow.num_train_timesteps
        )
        tracker.log_metrics({"probe_loss": probe_end}, cfg.max_steps)
        export = out / "export"
        if rank == 0:
            ema.save_pretrained(export)
            state = {
                "stage": cfg.stage,
                "steps": int(cfg.max_steps),
                "init": cfg.model.init,
                "init_sha256": init_sha,
                "export_sha256": weights_sha256(ema),
                "resumed_from": start,
                "val_loss": val.get("val_loss"),
            }
            (export / "train_state.json").write_text(json.dumps(state, indent=2))
            lineage = stage_lineage(cfg, meta, state, tracker.run_id)
            (export / "lineage.json").write_text(json.dumps(lineage, indent=2))
            encoders = meta["encoders"]
            pipe = build_pipeline(
                ema,
                encoders["vae"],
                encoders["text_encoder"],
                encoders["max_text_tokens"],
                cfg.flow,
                sample_shape(train_set.index),
            )
            pipe.save_pretrained(out / "pipeline")
            (out / "pipeline" / "lineage.json").write_text(json.dumps(lineage, indent=2))
            tracker.log_artifact(export / "config.json", "export")
            write_plots(out / "metrics.jsonl", out / "plots")  # DVC plots (`dvc plots show`)
        torch.distributed.barrier()
        tracker.close()
        return TrainResult(
            out, export, cfg.max_steps, start, losses, val, (probe_start, probe_end), tracker.run_id, step_times
        )
    finally:
        torch.distributed.destroy_process_group()


def stage_lineage(cfg: TrainConfig, meta: dict, state: dict, run_id: str | None) -> list[dict]:
    """Where the exported weights come from: the previous stages' records (from the init folder) and this one's
    (config, data key and manifest hash, weight hashes, MLflow run)."""
    previous = Path(cfg.model.init) / "lineage.json"
    chain = json.loads(previous.read_text()) if previous.exists() else []
    record = {
        **state,
        "config": to_dict(cfg),
        "data_key": meta.get("key", ""),
        "manifest_sha256": meta.get("manifest_sha256", ""),
        "mlflow_run_id": run_id,
    }  # the git commit is a tag of the MLflow run and of the registered version, not part of the weights' folder
    return [*chain, record]


def sample_shape(index) -> tuple[int, int, int]:
    """The default output of the trained pipeline: (frames, height, width) of the longest training bucket, the
    most common size among its samples."""
    longest = index[index.num_frames == index.num_frames.max()]
    height, width = longest.groupby(["height", "width"]).size().idxmax()
    frames = int(longest.num_frames.iloc[0])
    return frames, int(height), int(width)


def tokens_of(x0: torch.Tensor, model: STDiT) -> int:
    """Video tokens the transformer processes for a batch of latents (B, C, T, H, W)."""
    p = model.config.patch_size
    b, _, t, h, w = x0.shape
    return b * t * (h // p) * (w // p)


def train_flops(model: STDiT, x0: torch.Tensor, text_tokens: int, cfg: TrainConfig) -> float:
    from model.flops import Arch, forward_flops

    b, _, t, h, w = x0.shape
    f = forward_flops(Arch.from_config(model.config), batch=b, frames=t, height=h, width=w, text_tokens=text_tokens)
    return f.train_step(gradient_checkpointing=cfg.model.gradient_checkpointing)


def peak_tflops(device: str) -> float | None:
    """Dense bf16 peak of the GPU by name (for MFU, model.gpus), None when unknown."""
    from model.gpus import by_device_name

    spec = by_device_name(torch.cuda.get_device_name(device))
    return spec.bf16_tflops if spec else None


def peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


class Guard:
    """Skip bad steps and decide rollbacks (see GuardConfig); its counters travel with the checkpoints."""

    def __init__(self, cfg: GuardConfig, saved: dict | None = None):
        self.cfg = cfg
        saved = saved or {}
        self.skipped, self.rollbacks = int(saved.get("skipped", 0)), int(saved.get("rollbacks", 0))
        self.lr_scale = float(saved.get("lr_scale", 1.0))
        self.good: list[float] = list(saved.get("good", []))  # losses of the last `window` applied steps
        self.bad_in_a_row = 0
        self.fired: set[int] = set()  # planted faults fire once: the data moves on after a rollback
        self.plants = {int(k): v for k, v in cfg.plant.items()}

    def plant(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The loss of step `step + 1` with a planted fault, if one is configured for it (and has not fired)."""
        kind = self.plants.get(step + 1)
        if kind is None or step + 1 in self.fired:
            return loss
        self.fired.add(step + 1)
        return loss * float("nan") if kind == "nan" else loss * 1e3

    def check(self, loss: float, grad_norm: float | None) -> str:
        """'ok', 'non-finite' or 'spike' for a step's global loss and gradient norm (identical on every rank;
        None where the plugin clips inside its step)."""
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            verdict = "non-finite"
        elif (
            self.cfg.spike_factor > 0
            and len(self.good) >= self.cfg.window
            and loss > self.cfg.spike_factor * float(np.median(self.good))
        ):
            verdict = "spike"
        else:
            self.good = [*self.good, loss][-self.cfg.window :]
            self.bad_in_a_row = 0
            return "ok"
        self.skipped += 1
        self.bad_in_a_row += 1
        return verdict

    def must_roll_back(self) -> bool:
        return self.cfg.max_bad_steps > 0 and self.bad_in_a_row >= self.cfg.max_bad_steps

    def roll_back(self, step: int, target: Path | None) -> None:
        if target is None:
            raise RuntimeError(
                f"{self.bad_in_a_row} bad steps in a row at step {step} and no checkpoint to roll back to; "
                "lower optim.lr, raise optim.warmup_steps, or checkpoint earlier (ckpt_every)"
            )
        if self.rollbacks >= self.cfg.max_rollbacks:
            raise RuntimeError(
                f"{self.bad_in_a_row} bad steps in a row at step {step} after {self.rollbacks} rollbacks "
                f"(guard.max_rollbacks); the run stops here with its checkpoints intact: lower optim.lr or set "
                "guard.lr_factor < 1 and resume"
            )
        self.rollbacks += 1
        self.lr_scale *= self.cfg.lr_factor
        self.bad_in_a_row = 0

    def metrics(self) -> dict[str, float]:
        return {"guard/skipped_steps": self.skipped, "guard/rollbacks": self.rollbacks, "guard/lr_scale": self.lr_scale}

    def state(self) -> dict:
        return {"skipped": self.skipped, "rollbacks": self.rollbacks, "lr_scale": self.lr_scale, "good": self.good}


def _all_sum(value: float, device: str) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t)


def _scale_lr(scheduler, base_lr: float) -> None:
    """Set the schedule's base learning rate (after a rollback) and the optimizer's current rate to match."""
    scheduler.base_lrs = [base_lr for _ in scheduler.base_lrs]
    for group, fn in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["lr"] = base_lr * fn(scheduler.last_epoch)


def _clip(model, max_norm: float, plugin_name: str) -> float | None:
    if plugin_name == "zero2":  # LowLevelZero clips inside its step (max_norm)
        return None
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf"))
    return float(norm)


def _git_tags() -> dict[str, str]:
    commit = git_commit()
    return {"git_commit": commit} if commit else {}
