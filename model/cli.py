"""`t2v model`, `t2v buckets`, `t2v plan`: the command lines of the model's sizing tools (parameters and FLOPs of
a preset, the largest batch per bucket for a GPU, a schedule's GPU-hours and dollars)."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from rich.console import Console
from rich.table import Table

from model.networks.stdit import STDIT_PRESETS
from model.planning.info import preset_arch, summarize


def default_of(function, name: str):
    """A keyword's default in `function`'s signature: a flag that sets it states it nowhere else."""
    return inspect.signature(function).parameters[name].default


def add_parser(verbs: argparse._SubParsersAction) -> None:
    add_model_parser(verbs)
    add_buckets_parser(verbs)
    add_plan_parser(verbs)


def add_model_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "model",
        help="parameters and FLOPs of the STDiT presets",
        description="Parameters and training-step FLOPs (forward + backward) of STDiT and of the full-attention "
        "baseline for each preset, at one video shape. Defaults: Open-Sora 1.0's STDiT-XL/2 configuration "
        "(SD VAE, T5-XXL with 120 tokens, learned sigma) on 16 frames of 256x256.",
    )
    p.add_argument("--preset", choices=sorted(STDIT_PRESETS), action="append", help="repeatable; default: all")
    p.add_argument("--frames", type=int, default=16, help="latent frames (default 16)")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"), help="video pixels")
    p.add_argument("--vae-factor", type=int, default=8, help="pixels per latent pixel (default 8, SD VAE)")
    p.add_argument("--text-tokens", type=int, default=default_of(preset_arch, "text_tokens"), help="caption tokens "
                   "(default %(default)s)")  # fmt: skip
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    presets = args.preset or list(STDIT_PRESETS)
    rows = summarize(
        presets,
        frames=args.frames,
        height=args.size[0],
        width=args.size[1],
        vae_factor=args.vae_factor,
        text_tokens=args.text_tokens,
    )
    table = Table(title=f"{args.frames} frames x {args.size[0]}x{args.size[1]} px, batch 1, training step")
    for col in ("preset", "params (M)", "temporal (M)", "STDiT TFLOPs", "full-attn TFLOPs", "full / STDiT"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["preset"],
            f"{r['params_m']:.1f}",
            f"{r['temporal_params_m']:.1f}",
            f"{r['stdit_tflops']:.2f}",
            f"{r['full_tflops']:.2f}",
            f"{r['full_over_stdit']:.2f}",
        )
    Console().print(table)
    return 0


# ------------------------------------------------------------------------------------------------------ buckets

BUCKETS_DESCRIPTION = """\
The largest batch per bucket (resolution x frames) whose training step fits a GPU's memory, from the memory model
in model/planning/memory.py (weights, gradients, optimizer states sharded by ZeRO-2 over --dp processes, EMA,
activations with or without gradient checkpointing), written as a bucket_config that `t2v precompute --buckets FILE` and
`t2v train --set buckets=FILE` accept. The presets in configs/buckets/ are made with it:

  t2v buckets --gpu-memory 80 --out configs/buckets/80gb.yaml
"""


def add_buckets_parser(verbs: argparse._SubParsersAction) -> None:
    from model.planning.memory import PRESET_FRAMES, PRESET_RESOLUTIONS, bucket_preset

    p = verbs.add_parser(
        "buckets",
        help="the largest batch per bucket that fits a GPU's memory (a bucket_config preset)",
        description=BUCKETS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gpu-memory", type=float, required=True, metavar="GB", help="memory per GPU, e.g. 24 40 80 141")
    p.add_argument("--preset", choices=sorted(STDIT_PRESETS), default="XL/2", help="model preset (default XL/2)")
    p.add_argument("--dp", type=int, default=8, help="data-parallel processes ZeRO-2 shards over (default 8)")
    p.add_argument("--no-gradient-checkpointing", action="store_true", help="keep every block's activations")
    p.add_argument("--online-encoders", action="store_true", help="T5-XXL and the VAE on the GPU (encoding online)")
    p.add_argument("--text-tokens", type=int, default=default_of(bucket_preset, "text_tokens"), help="caption tokens "
                   "(default %(default)s)")  # fmt: skip
    p.add_argument("--vae-factor", type=int, default=8, help="pixels per latent pixel (default 8, SD VAE)")
    p.add_argument("--resolutions", nargs="+", default=list(PRESET_RESOLUTIONS), help="(default %(default)s)")
    p.add_argument("--frames", nargs="+", type=int, default=list(PRESET_FRAMES), help="(default %(default)s)")
    p.add_argument("--out", help="write the bucket_config here as YAML (default: print it)")
    p.set_defaults(run=_run_buckets)


def _run_buckets(args: argparse.Namespace) -> int:
    import yaml

    from model.planning.memory import ONLINE_ENCODER_PARAMS, StepSetup, bucket_preset

    encoders = sum(ONLINE_ENCODER_PARAMS.values()) if args.online_encoders else 0
    setup = StepSetup(plugin="zero2", dp=args.dp, gradient_checkpointing=not args.no_gradient_checkpointing,
                      encoder_params=encoders)  # fmt: skip
    preset = bucket_preset(
        preset_arch(args.preset, text_tokens=args.text_tokens),
        gpu_gb=args.gpu_memory,
        setup=setup,
        resolutions=tuple(args.resolutions),
        frames=tuple(args.frames),
        vae_factor=args.vae_factor,
        text_tokens=args.text_tokens,
    )
    table = Table(title=f"{args.preset}, {args.gpu_memory:g} GB, zero2 over {args.dp}, batch per bucket")
    table.add_column("resolution")
    for n in args.frames:
        table.add_column(f"{n} frames", justify="right")
    for r in args.resolutions:
        table.add_row(r, *(str(preset.get(r, {}).get(str(n), [0, "-"])[1]) for n in args.frames))
    Console(stderr=args.out is None).print(table)
    text = (
        f"# `t2v buckets --gpu-memory {args.gpu_memory:g} --preset {args.preset} --dp {args.dp}"
        f"{' --no-gradient-checkpointing' if args.no_gradient_checkpointing else ''}"
        f"{' --online-encoders' if args.online_encoders else ''} --text-tokens {args.text_tokens}`"
        ": the largest batch per bucket\n# by the memory model in model/planning/memory.py; buckets where one sample "
        "does not fit are left out.\n" + yaml.safe_dump(preset, sort_keys=False, default_flow_style=None)
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


# --------------------------------------------------------------------------------------------------------- plan

PLAN_DESCRIPTION = """\
What a training schedule costs before anyone rents a GPU: per stage the model FLOPs per sample (forward + backward;
beside them the full-attention baseline's and what recomputing every block adds), the total FLOPs (steps x batch,
or epochs x clips), GPU-hours and dollars at an MFU, wall-clock days on --num-gpus, and the memory per GPU at the
stage's batch (ZeRO-2 over all GPUs) with the largest batch that fits.

The MFU (model FLOPs over the GPUs' dense bf16 peak; recompute counts as lost time): --mfu, or --calibrate
STAGE=GPU_DAYS (the MFU at which a stage took that long, e.g. a published report), or the `mfu` the trainer logged
on GPUs in an MLflow run (--tracking-uri and --run-id). Without them: the MFU of the training step `t2v train` runs
on a GPU, as benchmarks/gpu.py last measured it (the title line names the measurement). With a run, the plan is
also put next to what the run measured (tokens/s per GPU, peak memory).

  t2v plan --config configs/plan/opensora-1.0.yaml --gpu h800 --num-gpus 64 --calibrate video-pretrain=117
"""


def add_plan_parser(verbs: argparse._SubParsersAction) -> None:
    from model.planning.gpus import GPUS

    p = verbs.add_parser(
        "plan",
        help="FLOPs, GPU-hours, dollars, days and memory per stage of a training schedule",
        description=PLAN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="schedule YAML (configs/plan/opensora-1.0.yaml)")
    p.add_argument("--gpu", default="h100", choices=sorted(GPUS), help="(default h100)")
    p.add_argument("--num-gpus", type=int, default=64, help="(default 64)")
    p.add_argument("--price-per-hour", type=float, default=2.5, help="dollars per GPU-hour (default 2.5)")
    p.add_argument("--mfu", type=float, help="model FLOPs utilisation, e.g. 0.35 (default: the measured one)")
    p.add_argument("--calibrate", metavar="STAGE=GPU_DAYS", help="take the MFU from a stage's known GPU-days")
    p.add_argument("--throughput", type=float, metavar="SAMPLES_PER_S", help="also give GPU-days at this per-GPU "
                   "throughput (samples/s) for the first stage's shape")  # fmt: skip
    p.add_argument("--tracking-uri", help="MLflow: take the MFU from --run-id and compare the plan with the run")
    p.add_argument("--run-id", help="an MLflow training run (stage) to compare with")
    p.set_defaults(run=_run_plan)


def resolve_mfu(args, schedule, spec) -> tuple[float, str]:
    from model.planning.plan import MEASURED_MFU, MEASURED_MFU_SOURCE, calibrate_mfu, mlflow_measurements

    if args.mfu is not None:
        return args.mfu, "stated"
    if args.calibrate:
        name, _, days = args.calibrate.partition("=")
        stage = next((s for s in schedule.stages if s.name == name), None)
        if stage is None or not days:
            raise ValueError(f"--calibrate {args.calibrate!r}: expected STAGE=GPU_DAYS with a stage of the schedule "
                             f"({[s.name for s in schedule.stages]})")  # fmt: skip
        return calibrate_mfu(schedule, stage, spec, float(days)), f"calibrated on {name} = {float(days):g} GPU-days"
    if args.tracking_uri and args.run_id:
        measured = mlflow_measurements(args.tracking_uri, args.run_id)
        if "mfu" in measured:
            return measured["mfu"], f"measured in MLflow run {args.run_id}"
        raise ValueError(f"MLflow run {args.run_id} logged no mfu (it ran on the CPU?); give --mfu or --calibrate")
    return MEASURED_MFU, f"measured: {MEASURED_MFU_SOURCE}"


def _run_plan(args: argparse.Namespace) -> int:
    from model.planning.gpus import gpu
    from model.planning.plan import Schedule, compare_with_run, days_from_throughput, mlflow_measurements, plan

    schedule, spec = Schedule.load(args.config), gpu(args.gpu)
    mfu, source = resolve_mfu(args, schedule, spec)
    stages = plan(schedule, spec, num_gpus=args.num_gpus, mfu=mfu, price_per_hour=args.price_per_hour)
    title = f"{args.config} on {args.num_gpus} x {spec.name} at MFU {mfu:.3f} ({source}), ${args.price_per_hour}/GPU-h"
    table = Table(title=title)
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
    if args.throughput:
        first = schedule.stages[0]
        print(f"at {args.throughput:g} samples/s/GPU, {first.name} takes "
              f"{days_from_throughput(first, args.throughput):.1f} GPU-days")  # fmt: skip
    if args.tracking_uri and args.run_id:
        measured = mlflow_measurements(args.tracking_uri, args.run_id)
        world = int(measured.get("world_size", 1))
        for key, row in compare_with_run(stages[0], measured, world).items():
            print(f"{key}: plan {row['plan']:.4g}, measured {row['measured']:.4g} ({row['ratio']:.2f}x)")
    return 0
