"""`t2v model`, `t2v buckets`: the command lines of the model's sizing tools (parameters and FLOPs of a preset, the
largest batch per bucket for a GPU) and of its weights' formats (`t2v model import|export opensora-v1`); a
schedule's GPU-hours and dollars are `t2v plan` (components/plan)."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from rich.console import Console
from rich.table import Table

from model.networks.presets import STDIT_PRESETS
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
    formats = p.add_subparsers(dest="model_verb", metavar="{import,export}", required=False)
    imp = formats.add_parser(
        "import",
        help="a released checkpoint as a pipeline folder",
        description="Open-Sora 1.0's released STDiT checkpoint (a .pth or .safetensors path, or a hub file such as "
        "hpcai-tech/Open-Sora/OpenSora-v1-HQ-16x512x512.pth) as a T2VPipeline folder that `t2v generate`, the "
        "registry and `--set model.init=FOLDER` take: every tensor mapped and checked, IDDPM sampling as the weights "
        "were trained, the SD VAE and T5-XXL as references, the file's sha256 in lineage.json.",
    )
    imp.add_argument("format", choices=["opensora-v1"])
    imp.add_argument("source", help="the checkpoint: a path, or ORG/NAME/FILE on the hub (its cache)")
    imp.add_argument("--out", required=True, help="the pipeline folder to write")
    imp.add_argument("--pixels", type=int, help="the resolution it was trained at (default: the release's, else 256)")
    imp.add_argument("--num-heads", type=int, help="attention heads (default: 16, the released width's)")
    imp.add_argument("--vae", help="the VAE spec (default: the one the release was trained with)")
    imp.add_argument("--text-encoder", help="the text encoder spec (default: the release's T5-v1.1-XXL)")
    imp.set_defaults(run=_import)
    exp = formats.add_parser(
        "export",
        help="a pipeline folder as a released checkpoint's file",
        description="A pipeline or transformer folder whose STDiT has Open-Sora 1.0's temporal branch (an import, "
        "or a model trained on from one) as a 1.0 checkpoint file that Open-Sora's own code loads.",
    )
    exp.add_argument("format", choices=["opensora-v1"])
    exp.add_argument("folder", help="the pipeline or transformer folder")
    exp.add_argument("--out", required=True, help="the checkpoint file to write (.pth)")
    exp.set_defaults(run=_export)


def _import(args: argparse.Namespace) -> int:
    from model.inference.imports import import_opensora_v1

    encoders = {k: v for k, v in (("vae", args.vae), ("text_encoder", args.text_encoder)) if v}
    folder = import_opensora_v1(args.source, args.out, pixels=args.pixels, num_heads=args.num_heads, **encoders)
    print(f'wrote {folder} (Open-Sora 1.0, sampling with IDDPM): t2v generate "a prompt" --model {folder}')
    return 0


def _export(args: argparse.Namespace) -> int:
    from model.inference.imports import export_opensora_v1

    print(f"wrote {export_opensora_v1(args.folder, args.out)}")
    return 0


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
