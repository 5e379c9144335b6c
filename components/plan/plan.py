"""The plan step: a training schedule's FLOPs, GPU-hours, dollars, days and memory per stage, on a GPU model at an
MFU, before anyone rents a GPU; after training, the plan next to what an MLflow run measured.

Its settings are a schedule (model.planning.plan.Schedule: the model and the stages) and where it would run. A
schedule file (configs/plan/*.yaml) is the step's settings file, read by the one settings loader like every step's:

    t2v plan --config configs/plan/opensora-1.0.yaml --gpu h800 --num-gpus 64 --calibrate video-pretrain=117
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from components.common import settings
from components.common.settings import setting
from model.planning.data import (
    ENCODE_MFU,
    ENCODE_MFU_SOURCE,
    MEASURED_INGEST_RATE,
    MEASURED_INGEST_SOURCE,
    DataPlan,
    data_plan,
)
from model.planning.gpus import GPUS, gpu
from model.planning.plan import (
    MEASURED_MFU,
    MEASURED_MFU_SOURCE,
    Schedule,
    StagePlan,
    calibrate_mfu,
    compare_with_run,
    days_from_throughput,
    mlflow_measurements,
    plan,
)


@dataclass(frozen=True)
class PlanSettings(Schedule):
    """A schedule (its stages and model from a schedule file) and where it would run."""

    gpu: str = setting("h100", f"the GPU model, one of {', '.join(sorted(GPUS))}")
    num_gpus: int = setting(64, "GPUs the run spreads over")
    price_per_hour: float = setting(2.5, "dollars per GPU-hour")
    mfu: float | None = setting(None, "model FLOPs utilisation, e.g. 0.35 (default: benchmarks/gpu.py's measured one)")
    calibrate: str = setting("", "STAGE=GPU_DAYS: the MFU at which a stage of the schedule took that long")
    throughput: float | None = setting(None, "samples/s per GPU: also the first stage's GPU-days at this throughput")
    tracking_uri: str = setting("", "MLflow: take the MFU from --run-id and compare the plan with that run")
    run_id: str = setting("", "an MLflow training run (one stage) to compare with")
    footage_hours: float = setting(0.0, "hours of footage to ingest: its CPU-hours beside the training (0: none)")
    cpu_cores: int = setting(1024, "CPU cores ingest's shards spread over")
    ingest_rate: float | None = setting(
        None, "seconds of footage a core ingests per second (default: benchmarks/ingest.py's measured one)"
    )
    encode_mfu: float | None = setting(None, "the encoders' MFU in precompute (default: model.planning.data's)")


def load_schedule(path: str | Path, *overrides: str) -> PlanSettings:
    """A schedule file, with `key=value` overrides, through the settings loader."""
    return settings.load(PlanSettings, config=path, overrides=overrides)


def resolve_mfu(cfg: PlanSettings) -> tuple[float, str]:
    """(the MFU, where it comes from): stated, calibrated on a stage's GPU-days, an MLflow run's, or the measured."""
    if cfg.mfu is not None:
        return cfg.mfu, "stated"
    if cfg.calibrate:
        name, _, days = cfg.calibrate.partition("=")
        stage = next((s for s in cfg.stages if s.name == name), None)
        if stage is None or not days:
            raise ValueError(f"calibrate={cfg.calibrate!r}: expected STAGE=GPU_DAYS with a stage of the schedule "
                             f"({[s.name for s in cfg.stages]})")  # fmt: skip
        return calibrate_mfu(cfg, stage, gpu(cfg.gpu), float(days)), f"calibrated on {name} = {float(days):g} GPU-days"
    if cfg.tracking_uri and cfg.run_id:
        measured = mlflow_measurements(cfg.tracking_uri, cfg.run_id)
        if "mfu" in measured:
            return measured["mfu"], f"measured in MLflow run {cfg.run_id}"
        raise ValueError(f"MLflow run {cfg.run_id} logged no mfu (it ran on the CPU?); give --mfu or --calibrate")
    return MEASURED_MFU, f"measured: {MEASURED_MFU_SOURCE}"


def plan_schedule(cfg: PlanSettings) -> list[StagePlan]:
    """Print the plan of every stage (and, with an MLflow run, the plan next to the run); return the stages' plans."""
    spec = gpu(cfg.gpu)
    mfu, source = resolve_mfu(cfg)
    stages = plan(cfg, spec, num_gpus=cfg.num_gpus, mfu=mfu, price_per_hour=cfg.price_per_hour)
    table = Table(title=f"{cfg.num_gpus} x {spec.name} at MFU {mfu:.3f} ({source}), ${cfg.price_per_hour}/GPU-h")
    cols = ("stage", "shape", "samples", "TFLOPs/sample", "full-attn x", "recompute x", "total EFLOPs", "GPU-hours",
            "dollars", "days", "GB/GPU", "batch/GPU (max)")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    for p in stages:
        s = p.stage
        table.add_row(
            s.name, f"{s.frames}x{s.height}x{s.width}", f"{s.samples_seen:.3g}", f"{p.flops_per_sample / 1e12:.2f}",
            f"{p.full_attention_flops_per_sample / p.flops_per_sample:.2f}",
            f"{p.recompute_flops_per_sample / p.flops_per_sample:.2f}", f"{p.total_flops / 1e18:.1f}",
            f"{p.gpu_hours:,.0f}", f"${p.dollars:,.0f}", f"{p.days:.2f}", f"{p.memory_gb:.1f}",
            f"{p.per_gpu_batch:g} ({p.max_per_gpu_batch})" + ("" if p.fits else " DOES NOT FIT"),
        )  # fmt: skip
    table.add_row("total", "", "", "", "", "", f"{sum(p.total_flops for p in stages) / 1e18:.1f}",
                  f"{sum(p.gpu_hours for p in stages):,.0f}", f"${sum(p.dollars for p in stages):,.0f}",
                  f"{sum(p.days for p in stages):.2f}", "", "")  # fmt: skip
    Console(width=max(170, Console().width)).print(table)
    if cfg.throughput:
        first = cfg.stages[0]
        print(f"at {cfg.throughput:g} samples/s/GPU, {first.name} takes "
              f"{days_from_throughput(first, cfg.throughput):.1f} GPU-days")  # fmt: skip
    print_data_plan(cfg, spec)
    if cfg.tracking_uri and cfg.run_id:
        measured = mlflow_measurements(cfg.tracking_uri, cfg.run_id)
        world = int(measured.get("world_size", 1))
        for key, row in compare_with_run(stages[0], measured, world).items():
            print(f"{key}: plan {row['plan']:.4g}, measured {row['measured']:.4g} ({row['ratio']:.2f}x)")
    return stages


def print_data_plan(cfg: PlanSettings, spec) -> DataPlan | None:
    """Ingest's CPU time for the footage and precompute's GPU time for each stage's clips (their `samples`), with the
    rates used and where they come from; nothing when the schedule states neither (or encodes online)."""
    stages = [(s.name, s.samples, s.frames, s.height, s.width) for s in cfg.stages if s.samples]
    if not cfg.footage_hours and (not stages or cfg.online_encoders):
        return None
    rate = cfg.ingest_rate or MEASURED_INGEST_RATE
    mfu = cfg.encode_mfu or ENCODE_MFU
    data = data_plan(
        [] if cfg.online_encoders else stages, footage_hours=cfg.footage_hours, text_tokens=cfg.text_tokens, gpu=spec,
        num_gpus=cfg.num_gpus, cores=cfg.cpu_cores, ingest_rate=rate, encode_mfu=mfu,
    )  # fmt: skip
    rate_source = "stated" if cfg.ingest_rate else f"measured: {MEASURED_INGEST_SOURCE}"
    mfu_source = "stated" if cfg.encode_mfu else ENCODE_MFU_SOURCE
    table = Table(title="data processing (before training)")
    for col in ("step", "work", "rate", "resource-hours", "hours", "on"):
        table.add_column(col, justify="right")
    if cfg.footage_hours:
        table.add_row(
            "ingest", f"{cfg.footage_hours:,.0f} h of footage", f"{rate:.2f} s of footage / core-s",
            f"{data.ingest_core_hours:,.1f} core-h", f"{data.ingest_hours:,.2f}", f"{cfg.cpu_cores} cores",
        )  # fmt: skip
    for name, (clips, hours) in data.encode.items():
        stage = next(s for s in cfg.stages if s.name == name)
        table.add_row(
            f"precompute {name}", f"{clips:,} clips of {stage.frames}x{stage.height}x{stage.width}", f"MFU {mfu:.2f}",
            f"{hours:,.1f} GPU-h", f"{hours / cfg.num_gpus:,.2f}", f"{cfg.num_gpus} GPUs",
        )  # fmt: skip
    Console(width=max(170, Console().width)).print(table)
    print(f"ingest rate: {rate_source}; encoding MFU: {mfu_source}")
    return data
