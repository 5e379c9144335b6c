"""`t2v data synth`: a generated toy world of captioned clips and stills, deterministic by seed.

Each video shows one shape of one colour moving in a named direction on a plain background, encoded as a real
H.264 mp4 that goes through the same ingest as any footage; each still shows a shape at rest (stage 1 data).
Every file gets an exact caption in a sidecar `.txt` ("a red circle moves left on a black background"), and
`ground_truth.csv` keeps (file, caption, colour, shape, direction, background) so that evaluation can measure
how well generated videos follow their prompts. Some videos can be made of two scenes (`cut_videos`), with the
cut's frame index recorded, to exercise scene detection.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from components.common.files import atomic_dir
from components.common.settings import setting
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
    out_dir: str = setting("data/toy", "output folder, replaced as a whole")
    videos: int = setting(48, "number of videos")
    images: int = setting(24, "number of stills")
    cut_videos: int = setting(0, "videos made of two scenes (a cut at the middle, for scene detection)")
    size: int = setting(64, "frame side in pixels, even")
    fps: int = setting(24, "frames per second")
    seconds: float = setting(2.5, "video length")
    seed: int = setting(0, "seed of the whole world")
    shape_scale: float = setting(0.14, "the shape's radius as a share of the frame side")
    path_spread: float = setting(
        0.6, "how far from the frame's middle line a path may run, as a share of the free width (0: always the middle)"
    )
    grid: int = setting(
        1,
        "pixels a shape's box snaps to, its side and its place (1: none); the factor frames are scaled down by for "
        "training (64 px frames, 16 px training: 4) keeps every square's edges on whole pixels there",
    )

    def __post_init__(self):
        if self.size % 2:
            raise ValueError(f"size={self.size} must be even (H.264 in yuv420p needs even sides)")
        if not 0 <= self.path_spread <= 1:
            raise ValueError(f"path_spread={self.path_spread} must be between 0 and 1")
        if self.grid < 1:
            raise ValueError(f"grid={self.grid} must be 1 (no snapping) or more pixels")
        if self.videos < 0 or self.images < 0 or not 0 <= self.cut_videos <= self.videos:
            raise ValueError("videos and images must be >= 0 and cut_videos between 0 and videos")


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


def snap(cx: float, cy: float, radius: float, grid: int) -> tuple[float, float, float]:
    """(cx, cy, radius) moved so that the shape's box has a side of whole `grid`s and starts on the grid."""
    if grid <= 1:
        return cx, cy, radius
    half = max(1, round(2 * radius / grid)) * grid / 2
    return (round((cx - half) / grid) * grid + half, round((cy - half) / grid) * grid + half, half)


def render(
    shape: str, colour: str, background: str, size: int, cx: float, cy: float, scale: float = 0.14, grid: int = 1
) -> np.ndarray:
    """One RGB frame (size, size, 3) uint8; the shape's radius is `scale` x size, its box snapped to `grid`."""
    frame = np.empty((size, size, 3), np.uint8)
    frame[:] = BACKGROUNDS[background]
    cx, cy, radius = snap(cx, cy, size * scale, grid)
    frame[shape_mask(shape, size, cx, cy, radius)] = COLOURS[colour]
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


def sample_world(rng: np.random.Generator, spread: float = 0.6) -> dict:
    return {
        "colour": str(rng.choice(list(COLOURS))),
        "shape": str(rng.choice(SHAPES)),
        "direction": str(rng.choice(list(DIRECTIONS))),
        "background": str(rng.choice(list(BACKGROUNDS))),
        "jitter": float(rng.uniform(0.5 - spread / 2, 0.5 + spread / 2)),
    }


def video_frames(world: dict, cfg: SynthConfig, num_frames: int) -> np.ndarray:
    path = trajectory(world["direction"], num_frames, cfg.size, world["jitter"], cfg.shape_scale)
    colours = (world["shape"], world["colour"], world["background"], cfg.size)
    return np.stack([render(*colours, x, y, cfg.shape_scale, cfg.grid) for x, y in path])


def synth(cfg: SynthConfig) -> Path:
    """Write the toy world to `cfg.out_dir` (replacing it atomically) and return that folder."""
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:
        (tmp / "videos").mkdir()
        (tmp / "images").mkdir()
        rows = []
        num_frames = round(cfg.fps * cfg.seconds)
        for i in tqdm(range(cfg.videos), desc="synth videos", disable=cfg.videos < 8):
            world = sample_world(rng, cfg.path_spread)
            frames = video_frames(world, cfg, num_frames)
            cut_frame = None
            if i < cfg.cut_videos:  # a second scene with another world, straight after the first
                second = sample_world(rng, cfg.path_spread)
                second["background"] = next(b for b in BACKGROUNDS if b != world["background"])
                cut_frame = num_frames
                frames = np.concatenate([frames, video_frames(second, cfg, num_frames)])
            name = f"videos/toy_{i:04d}.mp4"
            write_video(tmp / name, frames, cfg.fps)
            text = caption(world["colour"], world["shape"], world["background"], world["direction"])
            (tmp / name).with_suffix(".txt").write_text(text + "\n")
            rows.append({"file": name, "kind": "video", "caption": text, "cut_frame": cut_frame, **world})
        for i in range(cfg.images):
            world = sample_world(rng, cfg.path_spread)
            centre = cfg.size * (0.3 + 0.4 * world["jitter"])
            image = render(world["shape"], world["colour"], world["background"], cfg.size, centre, cfg.size / 2,
                           cfg.shape_scale, cfg.grid)  # fmt: skip
            name = f"images/toy_{i:04d}.png"
            Image.fromarray(image).save(tmp / name)
            text = caption(world["colour"], world["shape"], world["background"])
            (tmp / name).with_suffix(".txt").write_text(text + "\n")
            rows.append({"file": name, "kind": "image", "caption": text, "cut_frame": None, **world, "direction": ""})
        with open(tmp / "ground_truth.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=GROUND_TRUTH_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return out
