"""Training settings: frozen dataclasses with production defaults; a stage's YAML overrides only what differs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from components.common import settings
from components.common.encoding import EncodingConfig
from components.common.scores import thresholds
from components.common.settings import setting, stage_sections
from model.schedulers.config import FlowConfig

PLUGINS = ("auto", "ddp", "zero2")
STAGE_DATA = ("bucket_config", "frame_interval", "target_fps")  # what a stage's `precompute` may set
STAGE_FRAMES = {1: "images", 2: "videos", 3: "all"}
FRAMES = ("auto", "images", "videos", "all")

CHECKPOINT_FILES = (".pth", ".safetensors")  # model.init as an Open-Sora 1.0 checkpoint file


@dataclass(frozen=True)
class ModelConfig:
    """The network and where its weights come from."""

    init: str = setting(
        "scratch",
        "scratch, pixart:<id or folder>, an STDiT export folder (the previous stage), a pipeline folder or models:/ "
        "URI (an imported or registered model), or an Open-Sora 1.0 checkpoint file (.pth/.safetensors, a path or "
        "ORG/NAME/FILE on the hub)",
    )
    preset: str = setting("XL/2", "STDiT preset (model.networks.presets.STDIT_PRESETS) for a model from scratch")
    overrides: dict = setting({}, "STDiT constructor arguments over the preset (channels come from the data)")
    gradient_checkpointing: bool | int | str = setting(
        "auto",
        "recompute activations in the backward pass (less memory, up to 1/3 more compute): true (every block), false, "
        "a number of blocks, or auto (the fewest blocks the memory model says the largest bucket's step needs on this "
        "device)",
    )
    fused_projections: bool | str = setting(
        "auto",
        "one q/k/v GEMM per self-attention and one k/v GEMM per cross-attention: true, false, or auto (on CUDA; on "
        "the CPU the separate GEMMs round differently in the last bits, and the demo's figures are theirs)",
    )
    compile: bool | str = setting(
        "auto",
        "torch.compile every block (regional: one graph serves all blocks): true, false, or auto (on CUDA only; a "
        "failed compile falls back to eager with a warning)",
    )

    def __post_init__(self):
        ckpt = self.gradient_checkpointing
        if not (isinstance(ckpt, bool) or ckpt == "auto" or (isinstance(ckpt, int) and ckpt >= 0)):
            raise ValueError(
                f"model.gradient_checkpointing={ckpt!r}: give true, false, auto or a number of blocks (0 or more)"
            )
        for key in ("compile", "fused_projections"):
            if not (isinstance(getattr(self, key), bool) or getattr(self, key) == "auto"):
                raise ValueError(f"model.{key}={getattr(self, key)!r}: give true, false or auto")

    def on(self, key: str) -> bool:
        """Whether the true/false/auto setting `key` is on here (auto: on CUDA)."""
        import torch

        value = getattr(self, key)
        return torch.cuda.is_available() if value == "auto" else bool(value)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup (then constant, or decaying to the stage's end), gradient clipping and an EMA of the
    weights."""

    lr: float = setting(2e-5, "peak learning rate")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW betas")
    eps: float = setting(1e-8, "AdamW epsilon")
    warmup_steps: int = setting(1000, "steps of linear learning-rate warmup")
    decay: str = setting("constant", "learning rate after warmup: constant, or linear / cosine down to the stage end")
    min_lr_ratio: float = setting(0.0, "where a decay ends, as a share of lr")
    grad_clip: float = setting(1.0, "gradient norm clip (0: off)")
    ema_decay: float = setting(0.9999, "EMA decay per step (the EMA is what is exported)")
    ema_warmup: bool = setting(
        True,
        "ramp the decay in over the stage's first steps, (1 + n) / (10 + n) up to ema_decay: the export "
        "forgets the stage's starting weights (without it 0.9999 keeps over a third of them after 10k steps)",
    )

    def __post_init__(self):
        if self.decay not in ("constant", "linear", "cosine"):
            raise ValueError(f"optim.decay={self.decay!r}: choose constant, linear or cosine")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio={self.min_lr_ratio} must be between 0 and 1")

    def lr_factor(self, step: int, max_steps: int) -> float:
        """The learning rate of applied step `step` (0-based) of a `max_steps` stage, as a share of lr."""
        warmup = max(1, self.warmup_steps)
        if step < warmup or self.decay == "constant":
            return min(1.0, (step + 1) / warmup)
        done = min(1.0, (step + 1 - warmup) / max(1, max_steps - warmup))
        shape = 1.0 - done if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape

    def ema_decay_at(self, step: int) -> float:
        """The EMA decay of the update after applied step `step` (0-based) of a stage."""
        return min(self.ema_decay, (1 + step) / (10 + step)) if self.ema_warmup else self.ema_decay


@dataclass(frozen=True)
class GuardConfig:
    """Loss-spike and NaN handling. A step whose loss or gradient norm is not finite, or whose loss (gradient norm)
    exceeds `spike_factor` (`grad_spike_factor`) x the median of the last `window` applied steps, is skipped (no
    optimizer, scheduler or EMA update). After `max_bad_steps` bad steps in a row the run rolls back to its latest
    checkpoint (the data keeps moving forward, so the batches that caused it are not replayed) and multiplies the
    learning rate by `lr_factor`.
    """

    spike_factor: float = setting(5.0, "a loss above this x the recent median is a spike (0: no spike test)")
    grad_spike_factor: float = setting(
        0.0, "a gradient norm above this x the recent median of applied steps' norms is a spike too (0: no such test)"
    )
    window: int = setting(50, "applied steps the median is taken over (the spike test starts once it is full)")
    max_bad_steps: int = setting(5, "bad steps in a row before a rollback (0: never roll back)")
    lr_factor: float = setting(1.0, "learning-rate multiplier at each rollback, e.g. 0.5")
    max_rollbacks: int = setting(3, "then the run stops with an error naming the step")
    plant: dict = setting(
        {}, "fault injection for tests and drills: {step: nan | spike | nan_grad (a finite loss, NaN gradients)}"
    )


@dataclass(frozen=True)
class TrainConfig:
    stage: int = setting(1, "1 images, 2 videos (from stage 1's export), 3 high-quality subset (from stage 2's)")
    data: str = setting("data/precompute", "a precompute folder or root (ignored with online encoding)")
    online: EncodingConfig | None = setting(
        None, "encode every sample as it is read, with these settings (--set online.manifest=..., online.vae=...)"
    )
    out_dir: str = setting("outputs/train/stage1", "checkpoints/, export/, pipeline/, metrics.jsonl")
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    frames: str = setting("auto", "which samples: images, videos, all; auto: by stage (1 images, 2 videos, 3 all)")
    subset: dict = setting(
        {}, "the clips this stage trains on, by score: {aes: 5.0} (a minimum), {ocr: {max: 0.02}} (a range)"
    )
    precompute: dict = setting(
        {},
        "this stage's data, over the recipe's precompute section: bucket_config, frame_interval, target_fps (the "
        "DAG precomputes each distinct one once, keeping only the subset's clips)",
    )
    max_steps: int = setting(10_000, "training steps of this stage")
    seed: int = setting(0, "seed of the noise, timesteps, caption dropout and batch order")
    plugin: str = setting("auto", "zero2 (LowLevelZero, bf16; GPU) or ddp; auto: zero2 on GPU, ddp on CPU")
    buckets: str | dict | None = setting(
        None, "per-GPU batch sizes by bucket: a preset file (configs/buckets/) or a mapping"
    )
    sp: int = setting(1, "sequence-parallel group size: each video's frames split over sp processes")
    guard: GuardConfig = field(default_factory=GuardConfig)
    num_workers: int = setting(2, "DataLoader worker processes")
    log_every: int = setting(10, "steps between logged metrics")
    val_every: int = setting(500, "steps between validation losses (0: only at the end)")
    val_timesteps: int = setting(10, "timesteps of the validation loss")
    val_max_samples: int = setting(256, "held-out samples of the validation loss")
    sample_every: int = setting(1000, "steps between sample videos for MLflow (0: off)")
    sample_count: int = setting(2, "sample videos each time")
    sample_steps: int = setting(30, "sampling steps of the sample videos")
    guidance_scale: float = setting(7.0, "classifier-free guidance of the sample videos")
    ckpt_every: int = setting(500, "steps between checkpoints")
    keep_last: int = setting(3, "checkpoints kept")
    resume: str = setting("auto", "auto: the latest complete checkpoint in out_dir; none; or a checkpoint folder")
    tracking_uri: str | None = setting(None, "MLflow tracking URI (none: no tracking)")
    experiment: str = setting("t2v-pipeline", "MLflow experiment")
    system_metrics_every: float = setting(10.0, "seconds between MLflow system-metric samples (0: off)")
    tracking_wait_s: float = setting(
        15.0,
        "at the stage's end, how long the records MLflow has not taken yet (a server restarting) may wait; then "
        "they are dropped with a warning and the stage ends (the local metrics log has them all)",
    )
    expected_tokens_per_s: float | None = setting(
        None,
        "training tokens per second the recipe measured for this stage (per GPU, or on its CPU machine); a stage "
        "that logs slow_factor times fewer says so (log, MLflow tag, the task's line), with the machine's load",
    )
    slow_factor: float = setting(3.0, "how many times below expected_tokens_per_s a stage reports itself slow")
    progress: bool = setting(True, "progress bar")

    def __post_init__(self):
        if self.plugin not in PLUGINS:
            raise ValueError(f"plugin={self.plugin!r} must be one of {PLUGINS}")
        if self.stage not in STAGE_FRAMES:
            raise ValueError(f"stage={self.stage} must be 1, 2 or 3")
        bad = {k: v for k, v in self.guard.plant.items() if v not in ("nan", "spike", "nan_grad")}
        if bad:
            raise ValueError(f"guard.plant {bad}: each planted fault must be 'nan', 'spike' or 'nan_grad'")
        if self.sp < 1:
            raise ValueError(f"sp={self.sp} must be at least 1")
        if self.frames not in FRAMES:
            raise ValueError(f"frames={self.frames!r} must be auto, images, videos or all")
        thresholds(self.subset, f"stage{self.stage}.subset")
        unknown = sorted(set(self.precompute) - set(STAGE_DATA))
        if unknown:
            raise ValueError(
                f"stage{self.stage}.precompute: {unknown} cannot differ per stage; a stage sets {list(STAGE_DATA)} "
                "(the encoders are the recipe's precompute section, shared by every stage)"
            )

    def models(self) -> dict[str, str | None]:
        """The pretrained weights these settings load, by setting (a task checks them at its start)."""
        init = self.model.init
        pixart = init.split(":", 1)[1] if init.startswith("pixart:") else None
        hub_file = init if init.endswith(CHECKPOINT_FILES) else None  # an Open-Sora 1.0 checkpoint
        return {f"stage{self.stage}.model.init": pixart or hub_file, **(self.online.models() if self.online else {})}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    recipe: str | Path | dict | None = None,
    stage: int | None = None,
    fixed: dict | None = None,
) -> TrainConfig:
    """TrainConfig from a recipe's `train` + `stage<N>` sections, a YAML file (only what differs from the
    defaults) and `key.sub=value` overrides."""
    fixed = {**({"stage": stage} if stage is not None else {}), **(fixed or {})}
    sections = stage_sections(stage) if stage is not None else ()
    return settings.load(TrainConfig, recipe=recipe, sections=sections, config=path, overrides=overrides, fixed=fixed)
