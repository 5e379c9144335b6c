"""STDiT vs full attention vs Latte: forward+backward step time against frame count, beside the analytic ratios.

All three models have width 384 (6 heads of 64), 4 layers (STDiT: 4 spatial + 4 temporal attentions; Latte: 4
spatial + 4 temporal blocks; full: 4 joint attentions), a 16x16 latent with patch 2 (64 tokens per frame), batch 1,
120 text tokens of width 4096. Each measured ratio is the median step time of the other model over STDiT's, beside
the FLOPs ratio from `model.planning.flops`. The last rows are analytic only: Open-Sora's STDiT-XL/2 at 64
frames x 512 px, where Open-Sora measured a 5x speed-up over full attention.

    python benchmarks/attention.py            # 1, 4, 16, 64 frames
    python benchmarks/attention.py --quick    # 1 and 4 frames, one repetition (CI)

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from diffusers import LatteTransformer3DModel

from model.networks.stdit import STDiT
from model.planning.flops import Arch, forward_flops
from model.planning.info import summarize

WIDTH_HEADS, HEAD_DIM, DEPTH = 6, 64, 4
LATENT, PATCH, CHANNELS, TEXT_TOKENS, CAPTION_CHANNELS = 16, 2, 4, 120, 4096
OPENSORA_MEASURED_RATIO = 5.0  # DiT vs STDiT samples/s at 64x512x512, 8xH800 (Open-Sora 1.0 acceleration notes)


CONFIG = {"in_channels": CHANNELS, "patch_size": PATCH, "num_layers": DEPTH, "num_attention_heads": WIDTH_HEADS,
          "attention_head_dim": HEAD_DIM, "caption_channels": CAPTION_CHANNELS, "caption_max_length": TEXT_TOKENS,
          "sample_size": LATENT}  # fmt: skip


def build_stdit(mode: str) -> STDiT:
    return STDiT(**CONFIG, attention_mode=mode)


def build_latte(frames: int) -> LatteTransformer3DModel:
    return LatteTransformer3DModel(
        num_attention_heads=WIDTH_HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        num_layers=DEPTH,
        cross_attention_dim=WIDTH_HEADS * HEAD_DIM,
        attention_bias=True,
        sample_size=LATENT,
        patch_size=PATCH,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        caption_channels=CAPTION_CHANNELS,
        video_length=frames,
    )


def step_time(model: torch.nn.Module, frames: int, reps: int, device: str) -> float:
    """Median seconds of one forward+backward on a batch of one video."""
    model.to(device).train()
    x = torch.randn(1, CHANNELS, frames, LATENT, LATENT, device=device)
    text = torch.randn(1, TEXT_TOKENS, CAPTION_CHANNELS, device=device)
    t = torch.tensor([500.0], device=device)
    times = []
    for i in range(reps + 1):  # the first call warms up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(x, t, text, return_dict=False)[0]
        out.float().pow(2).mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def analytic(variant: str, frames: int, **shape) -> float:
    arch = Arch.from_config(build_stdit("spatial_temporal").config, variant)  # the benchmarked model's own config
    return forward_flops(arch, batch=1, frames=frames, height=LATENT, width=LATENT, **shape).train_step()


def xl2_ratio(frames: int, pixels: int) -> dict:
    """Analytic training-step FLOPs of Open-Sora 1.0's STDiT-XL/2 and its full-attention twin (SD VAE, 8x)."""
    row = summarize(["XL/2"], frames=frames, height=pixels, width=pixels)[0]
    return {
        "frames": frames,
        "pixels": pixels,
        "tokens": frames * (pixels // 8 // 2) ** 2,
        "stdit_tflops_per_step": row["stdit_tflops"],
        "full_tflops_per_step": row["full_tflops"],
        "full_over_stdit_analytic": row["full_over_stdit"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 and 4 frames, one timed repetition (for CI)")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help="frame counts (default 1 4 16 64)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per model (default 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-latte", action="store_true", help="skip diffusers' LatteTransformer3DModel")
    args = parser.parse_args(argv)
    frames_list = args.frames or ([1, 4] if args.quick else [1, 4, 16, 64])
    reps = args.reps or (1 if args.quick else 3)
    torch.manual_seed(0)

    stdit, full = build_stdit("spatial_temporal"), build_stdit("full")
    rows = []
    header = (
        f"{'frames':>6} {'tokens':>7} {'STDiT s':>9} {'full s':>9} {'Latte s':>9} "
        f"{'full/ST':>8} {'(FLOPs)':>8} {'Latte/ST':>9} {'(FLOPs)':>8}"
    )
    print(f"forward+backward, batch 1, width 384, depth {DEPTH}, 64 tokens/frame, device={args.device}")
    print(header)
    for frames in frames_list:
        row = {"frames": frames, "tokens": frames * (LATENT // PATCH) ** 2}
        row["stdit_s"] = step_time(stdit, frames, reps, args.device)
        row["full_s"] = step_time(full, frames, reps, args.device)
        row["full_over_stdit"] = row["full_s"] / row["stdit_s"]
        flops_st = analytic("spatial_temporal", frames)
        row["full_over_stdit_analytic"] = analytic("full", frames) / flops_st
        row["latte_s"] = row["latte_over_stdit"] = None
        row["latte_over_stdit_analytic"] = analytic("latte", frames) / flops_st
        if not args.no_latte:
            row["latte_s"] = step_time(build_latte(frames), frames, reps, args.device)
            row["latte_over_stdit"] = row["latte_s"] / row["stdit_s"]
        rows.append(row)
        latte_s = f"{row['latte_s']:9.3f}" if row["latte_s"] is not None else f"{'-':>9}"
        latte_r = f"{row['latte_over_stdit']:9.2f}" if row["latte_s"] is not None else f"{'-':>9}"
        print(
            f"{frames:6d} {row['tokens']:7d} {row['stdit_s']:9.3f} {row['full_s']:9.3f} {latte_s} "
            f"{row['full_over_stdit']:8.2f} {row['full_over_stdit_analytic']:8.2f} "
            f"{latte_r} {row['latte_over_stdit_analytic']:8.2f}"
        )

    xl2 = [xl2_ratio(16, 256), xl2_ratio(16, 512), xl2_ratio(64, 512)]
    print("\nanalytic, STDiT-XL/2 (Open-Sora 1.0 size), training step, batch 1, 120 text tokens:")
    print(f"{'frames':>6} {'pixels':>6} {'tokens':>7} {'STDiT TF':>9} {'full TF':>9} {'full/ST':>8}")
    for r in xl2:
        print(
            f"{r['frames']:6d} {r['pixels']:6d} {r['tokens']:7d} {r['stdit_tflops_per_step']:9.1f} "
            f"{r['full_tflops_per_step']:9.1f} {r['full_over_stdit_analytic']:8.2f}"
        )
    print(f"Open-Sora measured {OPENSORA_MEASURED_RATIO:.0f}x at 64 frames x 512 px (8xH800, with gradient ckpt)")

    result = {
        "benchmark": "attention",
        "device": args.device,
        "host": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "rows": rows,
        "xl2_analytic": xl2,
        "opensora_measured_full_over_stdit_64x512": OPENSORA_MEASURED_RATIO,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
