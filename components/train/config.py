"""Training configuration: frozen dataclasses with production defaults; a stage's YAML overrides only what differs."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from components.precompute.precompute import PrecomputeConfig
from model.flow import FlowConfig

PLUGINS = ("auto", "ddp", "zero2")
STAGE_FRAMES = {1: "images", 2: "videos", 3: "all"}


@dataclass(frozen=True)
class ModelConfig:
    init: str = "scratch"  # "scratch", "pixart:<id or folder>", or an STDiT export folder (the previous stage)
    preset: str = "XL/2"
    overrides: dict = field(default_factory=dict)  # STDiT constructor arguments (channels come from the data)
    gradient_checkpointing: bool = True


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999


@dataclass(frozen=True)
class GuardConfig:
    """Loss-spike and NaN handling. A step whose loss or gradient norm is not finite, or whose loss exceeds
    `spike_factor` x the median of the last `window` applied steps, is skipped (no optimizer, scheduler or EMA
    update). After `max_bad_steps` bad steps in a row the run rolls back to its latest checkpoint (the data keeps
    moving forward, so the batches that caused it are not replayed) and multiplies the learning rate by `lr_factor`.
    """

    spike_factor: float = 5.0  # 0: no spike test (non-finite steps are still skipped)
    window: int = 50  # applied steps the median is taken over; the spike test starts once the window is full
    max_bad_steps: int = 5  # 0: never roll back
    lr_factor: float = 1.0  # learning-rate multiplier at each rollback, e.g. 0.5
    max_rollbacks: int = 3  # then the run stops with an error naming the step
    plant: dict = field(default_factory=dict)  # fault injection for tests and drills: {step: "nan" | "spike"}


@dataclass(frozen=True)
class TrainConfig:
    stage: int = 1
    data: str = "data/precompute"  # a precompute folder or root (ignored when `online` is set)
    online: PrecomputeConfig | None = None  # encode every sample as it is read, with these settings, instead
    out_dir: str = "outputs/train/stage1"
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    frames: str = "auto"  # which samples: images, videos, all; auto: by stage (1 images, 2 videos, 3 all)
    subset: dict = field(default_factory=dict)  # minimum scores, e.g. {"aes": 5.0} for the high-quality stage
    max_steps: int = 10_000
    seed: int = 0
    plugin: str = "auto"  # zero2 (LowLevelZero, bf16) on GPU, ddp on CPU
    buckets: str | dict | None = None  # per-GPU batch sizes by bucket: a preset file (configs/buckets/) or a mapping
    sp: int = 1  # sequence-parallel group size: each video's frames split over sp processes (model.parallel)
    guard: GuardConfig = field(default_factory=GuardConfig)
    num_workers: int = 2
    log_every: int = 10
    val_every: int = 500
    val_timesteps: int = 10
    val_max_samples: int = 256
    sample_every: int = 1000  # sample videos for MLflow every N steps (0: off)
    sample_count: int = 2
    sample_steps: int = 30
    guidance_scale: float = 7.0
    ckpt_every: int = 500
    keep_last: int = 3
    resume: str = "auto"  # auto: the latest complete checkpoint in out_dir; none; or a checkpoint folder
    tracking_uri: str | None = None  # MLflow; None: no tracking
    experiment: str = "t2v-pipeline"
    system_metrics_every: float = 10.0  # seconds between MLflow system-metric samples (0: off)
    progress: bool = True


def _build(cls, values: dict, where: str):
    if not dataclasses.is_dataclass(cls):
        return values
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        inner = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]  # Optional[SomeConfig]
        hint = inner[0] if inner and isinstance(value, dict) else hint
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _build(hint, value, f"{where}.{name}")
        elif isinstance(value, list) and typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _parse_value(text: str):
    return yaml.safe_load(text)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """TrainConfig from a YAML file (only what differs from the defaults) and `key.sub=value` overrides."""
    values: dict = {}
    if path is not None:
        if not Path(path).exists():
            raise ValueError(f"config {path} not found; see configs/ for the stage configs")
        values = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-4")
        key, text = item.split("=", 1)
        node = values
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = _parse_value(text)
    cfg = _build(TrainConfig, values, str(path or "config"))
    if cfg.plugin not in PLUGINS:
        raise ValueError(f"plugin={cfg.plugin!r} must be one of {PLUGINS}")
    if cfg.stage not in STAGE_FRAMES:
        raise ValueError(f"stage={cfg.stage} must be 1, 2 or 3")
    bad = {k: v for k, v in cfg.guard.plant.items() if v not in ("nan", "spike")}
    if bad:
        raise ValueError(f"guard.plant {bad}: each planted fault must be 'nan' or 'spike'")
    if cfg.sp < 1:
        raise ValueError(f"sp={cfg.sp} must be at least 1")
    if cfg.frames not in ("auto", "images", "videos", "all"):
        raise ValueError(f"frames={cfg.frames!r} must be auto, images, videos or all")
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
