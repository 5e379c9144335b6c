"""Plan a training schedule before renting GPUs: FLOPs, GPU-hours, dollars, days and memory per stage.

A schedule (configs/plan/*.yaml, read by `t2v plan` through the settings loader, components/plan) names the
model and, per stage, the sample shape (frames x height x width in pixels), the global batch and either `steps` or
`epochs` over `samples` clips; what it leaves out is the default declared here (`Schedule`, `ModelSpec`):

    model: {out_channels: 8}   # also preset (XL/2), text_tokens, in_channels, caption_channels, overrides
    stages:
      - {name: video-pretrain, frames: 16, height: 256, width: 256, batch: 512, steps: 80000, samples: 366000}

FLOPs per sample come from model.planning.flops: the model FLOPs of a training step, forward + backward = 3x the
forward, for STDiT and for the full-attention baseline; the forward that gradient checkpointing repeats is not model
work, so its cost shows as a lower MFU (`recompute x` prints what it adds where every block recomputes). Time = FLOPs
/ (GPUs x peak x MFU). The MFU is stated, calibrated from a stage whose GPU-days are known (`calibrate_mfu`), taken
from a training run in MLflow (the `mfu` metric the trainer logs on GPUs), or by default `MEASURED_MFU`: the training
step `t2v train` runs on a GPU, as benchmarks/gpu.py last measured it. Memory per GPU: model.planning.memory at the
stage's per-GPU batch, ZeRO-2 over all GPUs. After training, `compare_with_run` puts the plan next to what an MLflow
run measured.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

from model.planning.buckets import latent_frames
from model.planning.flops import Arch, forward_flops
from model.planning.gpus import GPU
from model.planning.info import preset_arch
from model.planning.memory import GB, StepSetup, max_batch, step_memory

# The whole training step (ZeRO-2, bf16, AdamW) that `t2v train` runs on a GPU, as `benchmarks/gpu.py` measured it
# at Open-Sora 1.0's hq-highres shape; replace both with the figure of each new GPU run.
MEASURED_MFU = 0.186
MEASURED_MFU_SOURCE = (
    "benchmarks/gpu.py on one H200: STDiT-XL/2, 512 px x 16 frames, batch 4, ZeRO-2 bf16, every block recomputing, "
    "eager (measured before compiled blocks, fused projections and automatic recompute were the default)"
)


def _arch_default(name: str):
    """A keyword's default in model.planning.info.preset_arch: the schedule states it nowhere else."""
    return inspect.signature(preset_arch).parameters[name].default


@dataclass(frozen=True)
class Stage:
    """One training stage: its sample shape (pixels), global batch and length (`steps`, or `epochs` over `samples`
    clips)."""

    name: str
    frames: int
    height: int
    width: int
    batch: int  # global batch
    steps: int = 0
    epochs: float = 0.0
    samples: int = 0  # clips in the stage's data (with epochs: the samples seen = epochs x samples)

    @property
    def samples_seen(self) -> float:
        if self.steps:
            return float(self.steps) * self.batch
        if self.epochs and self.samples:
            return self.epochs * self.samples
        raise ValueError(f"stage {self.name}: give steps, or epochs and samples")


@dataclass(frozen=True)
class ModelSpec:
    """The schedule's network: an STDiT preset (with `overrides`) fed by encoders of these sizes; `out_channels`
    None is STDiT's own default (the input channels; 8 for 4 is learned sigma)."""

    preset: str = field(default="XL/2", metadata={"help": "an STDiT preset (model.networks.presets.STDIT_PRESETS)"})
    text_tokens: int = field(default=_arch_default("text_tokens"), metadata={"help": "caption tokens"})
    in_channels: int = field(default=_arch_default("in_channels"), metadata={"help": "latent channels"})
    out_channels: int | None = field(default=_arch_default("out_channels"), metadata={"help": "output channels"})
    caption_channels: int = field(default=_arch_default("caption_channels"), metadata={"help": "text features"})
    overrides: dict = field(default_factory=dict, metadata={"help": "preset values replaced, e.g. {num_layers: 4}"})


@dataclass(frozen=True)
class Schedule:
    """A training schedule: the model, the VAE's compression and the stages. Read from a YAML file with the settings
    loader (components/plan); the plan's math below takes it as it is."""

    stages: tuple[Stage, ...] = field(default=(), metadata={"help": "the stages, in a schedule file"})
    model: ModelSpec = field(default_factory=ModelSpec)
    vae_factor: int = field(default=8, metadata={"help": "pixels per latent pixel (8: SD VAE)"})
    vae_frames: int = field(default=1, metadata={"help": "frames per latent frame (1: a 2D VAE)"})
    gradient_checkpointing: bool = field(default=True, metadata={"help": "every block recomputes (memory)"})
    online_encoders: bool = field(default=False, metadata={"help": "the VAE and T5 run in the training step (their "
                                                                   "weights on every GPU)"})  # fmt: skip

    def __post_init__(self):
        if not self.stages:
            raise ValueError("a schedule needs stages: give a schedule file (--config configs/plan/opensora-1.0.yaml)")

    def arch(self, variant: str | None = None) -> Arch:
        """The schedule's model as model.planning.info.preset_arch builds it."""
        m = self.model
        return preset_arch(m.preset, text_tokens=m.text_tokens, in_channels=m.in_channels, out_channels=m.out_channels,
                           caption_channels=m.caption_channels, overrides=m.overrides, variant=variant)  # fmt: skip

    @property
    def text_tokens(self) -> int:
        return self.model.text_tokens

    def latent(self, stage: Stage) -> dict:
        frames = latent_frames(stage.frames, self.vae_frames)
        return {"frames": frames, "height": stage.height // self.vae_factor, "width": stage.width // self.vae_factor}


def sample_flops(schedule: Schedule, stage: Stage, variant: str | None = None, recompute: bool = False) -> float:
    """Model FLOPs of training on one sample of `stage` (forward + backward); with `recompute`, plus the forward
    that gradient checkpointing of every block repeats (the hardware's work, not the model's)."""
    f = forward_flops(schedule.arch(variant), batch=1, text_tokens=schedule.text_tokens, **schedule.latent(stage))
    return f.train_step(gradient_checkpointing=recompute)


def calibrate_mfu(schedule: Schedule, stage: Stage, gpu: GPU, gpu_days: float) -> float:
    """The MFU at which `stage` takes `gpu_days` on `gpu` (e.g. from a published report)."""
    return sample_flops(schedule, stage) * stage.samples_seen / (gpu_days * 86400 * gpu.bf16_tflops * 1e12)


@dataclass
class StagePlan:
    stage: Stage
    flops_per_sample: float
    full_attention_flops_per_sample: float
    recompute_flops_per_sample: float  # with every block recomputing: what the hardware does
    total_flops: float
    gpu_hours: float
    dollars: float
    days: float
    memory_gb: float  # per GPU at the stage's per-GPU batch
    per_gpu_batch: float
    max_per_gpu_batch: int
    tokens_per_s_per_gpu: float  # video tokens the plan expects each GPU to process per second

    @property
    def fits(self) -> bool:
        return self.max_per_gpu_batch >= math.ceil(self.per_gpu_batch)


def plan(schedule: Schedule, gpu: GPU, *, num_gpus: int, mfu: float, price_per_hour: float) -> list[StagePlan]:
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu={mfu} must be in (0, 1]; typical for DiT training: 0.3-0.5")
    if num_gpus < 1:
        raise ValueError(f"num_gpus={num_gpus} must be at least 1")
    arch = schedule.arch()
    from model.planning.memory import ONLINE_ENCODER_PARAMS

    encoders = sum(ONLINE_ENCODER_PARAMS.values()) if schedule.online_encoders else 0
    setup = StepSetup(plugin="zero2", dp=num_gpus, gradient_checkpointing=schedule.gradient_checkpointing,
                      encoder_params=encoders)  # fmt: skip
    out = []
    for s in schedule.stages:
        per_sample = sample_flops(schedule, s)
        total = per_sample * s.samples_seen
        gpu_hours = total / (gpu.bf16_tflops * 1e12 * mfu) / 3600
        shape = {**schedule.latent(s), "text_tokens": schedule.text_tokens, "setup": setup}
        per_gpu = s.batch / num_gpus
        memory = step_memory(arch, batch=max(1, math.ceil(per_gpu)), **shape)["total"] / GB
        tokens = (
            schedule.latent(s)["frames"]
            * (schedule.latent(s)["height"] // arch.patch_size)
            * (schedule.latent(s)["width"] // arch.patch_size)
        )
        samples_per_s = gpu.bf16_tflops * 1e12 * mfu / per_sample
        out.append(
            StagePlan(
                stage=s,
                flops_per_sample=per_sample,
                full_attention_flops_per_sample=sample_flops(schedule, s, "full"),
                recompute_flops_per_sample=sample_flops(schedule, s, recompute=True),
                total_flops=total,
                gpu_hours=gpu_hours,
                dollars=gpu_hours * price_per_hour,
                days=gpu_hours / num_gpus / 24,
                memory_gb=memory,
                per_gpu_batch=per_gpu,
                max_per_gpu_batch=max_batch(arch, gpu_gb=gpu.memory_gb, **shape),
                tokens_per_s_per_gpu=samples_per_s * tokens,
            )
        )
    return out


def days_from_throughput(stage: Stage, samples_per_s_per_gpu: float) -> float:
    """GPU-days of `stage` at a measured throughput (samples per second per GPU)."""
    return stage.samples_seen / samples_per_s_per_gpu / 86400


def mlflow_measurements(tracking_uri: str, run_id: str) -> dict[str, float]:
    """Means of a training run's tokens_per_s, peak_memory_gb and mfu (those it logged), from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    out = {}
    for key in ("tokens_per_s", "peak_memory_gb", "mfu", "samples_per_s"):
        history = [m.value for m in client.get_metric_history(run_id, key)]
        if history:
            out[key] = max(history) if key == "peak_memory_gb" else sum(history) / len(history)
    out["world_size"] = float(run.data.params.get("world_size", 1) or 1)
    return out


def compare_with_run(stage_plan: StagePlan, measured: dict[str, float], num_gpus: int) -> dict[str, dict]:
    """Plan vs measurement: {metric: {"plan", "measured", "ratio"}} for tokens/s per GPU, peak memory and MFU."""
    rows = {}
    if "tokens_per_s" in measured:
        rows["tokens_per_s_per_gpu"] = (stage_plan.tokens_per_s_per_gpu, measured["tokens_per_s"] / num_gpus)
    if "peak_memory_gb" in measured:
        rows["peak_memory_gb"] = (stage_plan.memory_gb, measured["peak_memory_gb"])
    return {k: {"plan": p, "measured": m, "ratio": m / p if p else float("nan")} for k, (p, m) in rows.items()}
