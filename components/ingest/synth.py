"""`t2v data synth`: a generated toy world of captioned clips and stills, deterministic by seed.

Each video shows one shape of one colour moving in a named direction on a plain background, encoded as a real
H.264 mp4 that goes through the same ingest as any footage; each still shows a shape at rest (stage 1 data).
Every file gets an exact caption in a sidecar `.txt` ("a red circle moves left on a black background"), and
`ground_truth.csv` keeps (file, caption, colour, shape, direction, background) so that evaluation can measure
how well generated videos follow their prompts. Some videos can be made of two scenes (`cut_videos`), with the
cut's frame index recorded, to exercise scene detection.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from components.common.video import write_video

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUNDS = {"black": (10, 10, 10), "white": (240, 240, 240), "gray": (128, 128, 128)}
GROUND_TRUTH_COLUMNS = ("file", "kind", "caption", "colour", "shape", "direction", "background", "cut_frame")


@dataclass(frozen=True)
class SynthConfig:
    out_dir: str = "data/toy"
    videos: int = 48
    images: int = 24
    cut_videos: int = 0
    size: int = 64
    fps: int = 24
    seconds: float = 2.5
    seed: int = 0
    shape_scale: float = 0.14  # the shape's radius as a share of the frame side


def caption(colour: str, shape: str, background: str, direction: str | None = None) -> str:
    motion = f"moves {direction}" if direction else "rests"
    return f"a {colour} {shape} {motion} on a {background} background"


def shape_mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Boolean (size, size) mask of `shape` centred at (cx, cy)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    if shape == "square":
        return (np.abs(xx - cx) <= radius) & (np.abs(yy - cy) <= radius)
    if shape == "triangle":  # apex up
        inside_y = (yy >= cy - radius) & (yy <= cy + radius)
        half_width = (yy - (cy - radius)) / 2
        return inside_y & (np.abs(xx - cx) <= half_width)
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def render(
    shape: str, colour: str, background: str, size: int, cx: float, cy: float, scale: float = 0.14
) -> np.ndarray:
    """One RGB frame (size, size, 3) uint8; the shape's radius is `scale` x size."""
    frame = np.empty((size, size, 3), np.uint8)
    frame[:] = BACKGROUNDS[background]
    frame[shape_mask(shape, size, cx, cy, size * scale)] = COLOURS[colour]
    return frame


def trajectory(direction: str, num_frames: int, size: int, jitter: float, scale: float = 0.14) -> np.ndarray:
    """(num_frames, 2) centres crossing most of the frame in `direction`; `jitter` in [0, 1) shifts the path;
    the shape (radius `scale` x size) stays inside the frame."""
    dx, dy = DIRECTIONS[direction]
    margin = size * max(0.2, scale + 0.04)
    progress = np.linspace(margin, size - margin, num_frames)
    across = margin + jitter * (size - 2 * margin)
    xs = progress if dx > 0 else (size - progress if dx < 0 else np.full(num_frames, across))
    ys = progress if dy > 0 else (size - progress if dy < 0 else np.full(num_frames, across))
    return np.stack([xs, ys], axis=1)


def sample_world(rng: np.random.Generator) -> dict:
    return {
        "colour": str(rng.choice(list(COLOURS))),
        "shape": str(rng.choice(SHAPES)),
        "direction": str(rng.choice(list(DIRECTIONS))),
        "background": str(rng.choice(list(BACKGROUNDS))),
        "jitter": float(rng.uniform(0.2, 0.8)),
    }


def video_frames(world: dict, cfg: SynthConfig, num_frames: int) -> np.ndarray:
    path = trajectory(world["direction"], num_frames, cfg.size, world["jitter"], cfg.shape_scale)
    return np.stack(
        [render(world["shape"], world["colour"], world["background"], cfg.size, x, y, cfg.shape_scale) for x, y in path]
    )


def synth(cfg: SynthConfig) -> Path:
    """Write the toy world to `cfg.out_dir` (replacing it atomically) and return that folder."""
    if cfg.size % 2:
        raise ValueError(f"size={cfg.size} must be even (H.264 in yuv420p needs even sides)")
    if cfg.videos < 0 or cfg.images < 0 or not 0 <= cfg.cut_videos <= cfg.videos:
        raise ValueError("videos and images must be >= 0 and cut_videos between 0 and videos")
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    (tmp / "videos").mkdir()
    (tmp / "images").mkdir()
    rows = []
    num_frames = round(cfg.fps * cfg.seconds)
    for i in tqdm(range(cfg.videos), desc="synth videos", disable=cfg.videos < 8):
        world = sample_world(rng)
        frames = video_frames(world, cfg, num_frames)
        cut_frame = None
        if i < cfg.cut_videos:  # a second scene with another world, straight after the first
            second = sample_world(rng)
            second["background"] = next(b for b in BACKGROUNDS if b != world["background"])
            cut_frame = num_frames
            frames = np.concatenate([frames, video_frames(second, cfg, num_frames)])
        name = f"videos/toy_{i:04d}.mp4"
        write_video(tmp / name, frames, cfg.fps)
        text = caption(world["colour"], world["shape"], world["background"], world["direction"])
        (tmp / name).with_suffix(".txt").write_text(text + "\n")
        rows.append({"file": name, "kind": "video", "caption": text, "cut_frame": cut_frame, **world})
    for i in range(cfg.images):
        world = sample_world(rng)
        centre = cfg.size * (0.3 + 0.4 * world["jitter"])
        image = render(world["shape"], world["colour"], world["background"], cfg.size, centre, cfg.size / 2,
                       cfg.shape_scale)  # fmt: skip
        name = f"images/toy_{i:04d}.png"
        Image.fromarray(image).save(tmp / name)
        text = caption(world["colour"], world["shape"], world["background"])
        (tmp / name).with_suffix(".txt").write_text(text + "\n")
        rows.append({"file": name, "kind": "image", "caption": text, "cut_frame": None, **world, "direction": ""})
    with open(tmp / "ground_truth.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=GROUND_TRUTH_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def add_parser(verbs: argparse._SubParsersAction) -> None:
    data = verbs.add_parser("data", help="generated datasets", description="Generated datasets.")
    sub = data.add_subparsers(title="commands", metavar="<command>", required=True)
    d = SynthConfig()
    p = sub.add_parser(
        "synth",
        help="write the toy world: captioned mp4s of moving shapes, stills and their ground truth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out-dir", default=d.out_dir, help=f"output folder, replaced as a whole (default {d.out_dir})")
    p.add_argument("--videos", type=int, default=d.videos, help=f"number of videos (default {d.videos})")
    p.add_argument("--images", type=int, default=d.images, help=f"number of stills (default {d.images})")
    p.add_argument("--cut-videos", type=int, default=d.cut_videos, help="videos made of two scenes (default 0)")
    p.add_argument("--size", type=int, default=d.size, help=f"frame side in pixels, even (default {d.size})")
    p.add_argument("--fps", type=int, default=d.fps, help=f"frames per second (default {d.fps})")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"video length (default {d.seconds})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"(default {d.seed})")
    p.add_argument("--shape-scale", type=float, default=d.shape_scale, help="shape radius / frame side (default 0.14)")
    p.set_defaults(run=_run)
    t = sub.add_parser(
        "tiny-models",
        help="write tiny random encoders and captioner (T5, SD-VAE layout, LLaVA-NeXT) for the toy world",
        description="Tiny random models saved as real model folders (t5/, vae/, llava-next/) that load through "
        "the production from_pretrained paths: the toy world's text encoder, VAE and captioner.",
    )
    t.add_argument("--out-dir", default="data/models", help="(default data/models)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(run=_run_tiny)


def _run_tiny(args: argparse.Namespace) -> int:
    from components.caption.tiny import build_tiny_llava_next
    from components.precompute.tiny import build_tiny_t5, build_tiny_vae

    out = Path(args.out_dir)
    for name, build in (("t5", build_tiny_t5), ("vae", build_tiny_vae), ("llava-next", build_tiny_llava_next)):
        build(out / name, seed=args.seed)
    print(f"tiny models in {out}: t5/, vae/, llava-next/")
    return 0


def _run(args: argparse.Namespace) -> int:
    cfg = SynthConfig(**{k: getattr(args, k) for k in asdict(SynthConfig())})
    out = synth(cfg)
    print(f"toy world: {cfg.videos} videos, {cfg.images} stills -> {out} (ground truth: {out / 'ground_truth.csv'})")
    return 0
