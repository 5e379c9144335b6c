"""`t2v model`, `t2v buckets`: the command lines of the model's sizing tools (parameters and FLOPs of a preset, the
largest batch per bucket for a GPU); a schedule's GPU-hours and dollars are `t2v plan` (components/plan)."""

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
