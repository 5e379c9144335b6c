"""`t2v model`: parameter counts and training FLOPs of the model presets at a video shape."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from model.flops import Arch, forward_flops, param_counts
from model.stdit import STDIT_PRESETS, preset_config


def summarize(
    presets: list[str],
    *,
    frames: int,
    height: int,
    width: int,
    vae_factor: int = 8,
    in_channels: int = 4,
    out_channels: int = 8,
    caption_channels: int = 4096,
    text_tokens: int = 120,
    batch: int = 1,
) -> list[dict]:
    """One row per preset: parameters, and training-step TFLOPs of STDiT and of the full-attention baseline."""
    if height % vae_factor or width % vae_factor:
        raise ValueError(f"video size {height}x{width} must be divisible by the VAE factor {vae_factor}")
    rows = []
    for name in presets:
        config = {
            **preset_config(name),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "caption_channels": caption_channels,
            "caption_max_length": text_tokens,
            "mlp_ratio": 4.0,
            "qk_norm": False,
            "attention_mode": "spatial_temporal",
        }
        shape = {
            "batch": batch,
            "frames": frames,
            "height": height // vae_factor,
            "width": width // vae_factor,
        }
        st = forward_flops(Arch.from_config(config), text_tokens=text_tokens, **shape).train_step()
        full = forward_flops(Arch.from_config(config, "full"), text_tokens=text_tokens, **shape).train_step()
        params = param_counts(Arch.from_config(config))
        rows.append(
            {
                "preset": name,
                "params_m": params["total"] / 1e6,
                "temporal_params_m": params["temporal"] / 1e6,
                "stdit_tflops": st / 1e12,
                "full_tflops": full / 1e12,
                "full_over_stdit": full / st,
            }
        )
    return rows


def add_parser(verbs: argparse._SubParsersAction) -> None:
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
    p.add_argument("--text-tokens", type=int, default=120, help="caption tokens (default 120)")
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
