"""`t2v demo`: the end-to-end path on one machine, with nothing to download.

Generates a toy world of short clips (a coloured square moving left or right), captions them with a fixed word
embedding, trains a small STDiT on them with the rectified-flow objective, samples one video per caption with
classifier-free guidance, and checks that the samples follow their captions (colour and direction).
Writes sample GIFs, a loss curve and `metrics.json` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from model.flow import FlowConfig, sample, training_loss
from model.stdit import STDiT

log = logging.getLogger(__name__)

COLOURS = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
}
DIRECTIONS = ("left", "right")


@dataclass(frozen=True)
class DemoConfig:
    output_dir: str = "outputs/demo"
    steps: int = 400
    frames: int = 8
    size: int = 16
    square: int = 6
    lr: float = 1e-3
    seed: int = 0
    text_channels: int = 32
    sample_steps: int = 20
    guidance_scale: float = 4.0
    temporal_position: str = "rope"


def toy_clip(colour: str, direction: str, *, frames: int, size: int, square: int) -> np.ndarray:
    """A (3, T, H, W) clip in [-1, 1]: a `colour` square crossing a grey background towards `direction`."""
    clip = np.full((3, frames, size, size), -0.6, dtype=np.float32)
    top = (size - square) // 2
    xs = np.linspace(0, size - square, frames).round().astype(int)
    if direction == "left":
        xs = xs[::-1]
    for t, x in enumerate(xs):
        clip[:, t, top : top + square, x : x + square] = np.asarray(COLOURS[colour], np.float32)[:, None, None]
    return clip


def word_embeddings(words: list[str], channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed random vector per word: the toy world's text encoder."""
    g = torch.Generator().manual_seed(seed)
    return {w: torch.randn(channels, generator=g) for w in sorted(words)}


def captions() -> list[tuple[str, str]]:
    return [(c, d) for c in COLOURS for d in DIRECTIONS]


def encode(pairs: list[tuple[str, str]], vocab: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([torch.stack([vocab[c], vocab[d]]) for c, d in pairs])  # (B, 2 tokens, channels)


def judge(video: np.ndarray) -> tuple[str, str]:
    """The (colour, direction) a generated (3, T, H, W) clip shows: nearest colour of its most saturated pixels,
    and the sign of its centroid's horizontal motion."""
    saturation = np.abs(video - video.mean(axis=0, keepdims=True)).sum(axis=0)  # (T, H, W)
    mask = saturation > np.quantile(saturation, 0.8)
    mean_rgb = video[:, mask].mean(axis=1)
    colour = min(COLOURS, key=lambda c: np.sum((np.asarray(COLOURS[c]) - mean_rgb) ** 2))
    cols = np.arange(video.shape[-1])
    weights = saturation * mask
    centroid = (weights.sum(axis=1) * cols).sum(axis=1) / np.maximum(weights.sum(axis=(1, 2)), 1e-6)  # (T,)
    direction = "right" if np.polyfit(np.arange(len(centroid)), centroid, 1)[0] > 0 else "left"
    return colour, direction


def save_gif(video: np.ndarray, path: Path, scale: int = 8) -> None:
    import imageio.v2 as imageio

    frames = ((np.clip(video, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(1, 2, 3, 0)  # (T, H, W, 3)
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    imageio.mimsave(path, list(frames), duration=0.15, loop=0)


def save_loss_plot(losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, alpha=0.35, label="step")
    window = max(len(losses) // 20, 1)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window - 1, len(losses)), smooth, label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="rectified-flow loss", yscale="log", title="demo training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(cfg: DemoConfig) -> dict:
    """Train, sample and judge; returns the metrics written to `metrics.json`."""
    torch.manual_seed(cfg.seed)
    pairs = captions()
    vocab = word_embeddings([w for pair in pairs for w in pair], cfg.text_channels, cfg.seed)
    clips = torch.from_numpy(
        np.stack([toy_clip(c, d, frames=cfg.frames, size=cfg.size, square=cfg.square) for c, d in pairs])
    )
    text = encode(pairs, vocab)
    model = STDiT(
        in_channels=3,
        patch_size=2,
        num_layers=4,
        num_attention_heads=4,
        attention_head_dim=16,
        caption_channels=cfg.text_channels,
        caption_max_length=2,
        sample_size=cfg.size,
        temporal_position=cfg.temporal_position,
    )
    # pixel space: the image-area shift would treat 16x16 pixels as a 2x2-pixel image
    flow = FlowConfig(spatial_compression=1, base_pixels=cfg.size**2, base_latent_frames=cfg.frames)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    losses = []
    start = time.perf_counter()
    for step in (bar := tqdm(range(cfg.steps), desc="demo training")):
        loss = training_loss(model, clips, text, None, flow, seed=cfg.seed, step=step, indices=range(len(pairs)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
    train_s = time.perf_counter() - start

    model.eval()
    videos = sample(
        model,
        tuple(clips.shape),
        text,
        cfg=flow,
        num_steps=cfg.sample_steps,
        guidance_scale=cfg.guidance_scale,
        generator=torch.Generator().manual_seed(cfg.seed + 1),
        progress=True,
    ).numpy()
    verdicts = [judge(v) for v in videos]
    metrics = {
        "train_seconds": train_s,
        "steps": cfg.steps,
        "loss_first_20": float(np.mean(losses[:20])),
        "loss_last_20": float(np.mean(losses[-20:])),
        "colour_accuracy": float(np.mean([v[0] == p[0] for v, p in zip(verdicts, pairs, strict=True)])),
        "direction_accuracy": float(np.mean([v[1] == p[1] for v, p in zip(verdicts, pairs, strict=True)])),
        "samples": {f"{c} {d}": f"{c}_{d}.gif" for c, d in pairs},
        "config": asdict(cfg),
    }

    out = Path(cfg.output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    for (c, d), video in zip(pairs, videos, strict=True):
        save_gif(video, tmp / f"{c}_{d}.gif")
    save_loss_plot(losses, tmp / "loss.png")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return metrics


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "demo",
        help="train a tiny STDiT on generated clips and write sample videos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = DemoConfig()
    p.add_argument("--output-dir", default=defaults.output_dir, help=f"(default {defaults.output_dir})")
    p.add_argument("--steps", type=int, default=defaults.steps, help=f"training steps (default {defaults.steps})")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--temporal-position", default=defaults.temporal_position, help="rope, sincos or rope+sincos")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise ValueError(f"--steps={args.steps} must be at least 1")
    metrics = run_demo(
        DemoConfig(
            output_dir=args.output_dir,
            steps=args.steps,
            seed=args.seed,
            temporal_position=args.temporal_position,
        )
    )
    out = Path(args.output_dir)
    print(
        f"loss {metrics['loss_first_20']:.4f} -> {metrics['loss_last_20']:.4f} in {metrics['train_seconds']:.0f}s; "
        f"prompt adherence: colour {metrics['colour_accuracy']:.0%}, direction {metrics['direction_accuracy']:.0%} "
        f"(chance 25% / 50%)"
    )
    print(f"sample videos: {out}/*.gif   loss curve: {out / 'loss.png'}   metrics: {out / 'metrics.json'}")
    return 0
