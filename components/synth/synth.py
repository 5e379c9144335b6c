"""`t2v data synth`: a generated toy world of captioned clips and stills, deterministic by seed.

Each video shows one shape of one colour moving in a named direction on a plain background, encoded as a real
H.264 mp4 that goes through the same ingest as any footage; each still shows a shape at rest (stage 1 data).
Every file gets an exact caption in a sidecar `.txt` ("a red circle moves left on a black background"), and
`ground_truth.csv` keeps (file, caption, colour, shape, direction, background) so that evaluation can measure
how well generated videos follow their prompts. Some videos can be made of two scenes (`cut_videos`), with the
cut's frame index recorded, to exercise scene detection. `held_out` names (colour, shape, direction) combinations
no video shows, so that evaluation can ask for them (does the model compose words it learned apart?); `pairs` adds
videos of two shapes moving independently ("a red square moves left and a blue circle moves up on ...").
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
from components.common.toy.world import (
    BACKGROUNDS,
    caption,
    check_held_out,
    pair_caption,
    render,
    render_pair,
    sample_pair,
    sample_world,
    trajectory,
)
from components.common.video import write_video

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

    held_out: tuple[str, ...] = setting(
        (),
        "'colour shape direction' combinations no video shows (every attribute and every pair of them must still "
        "occur); [quarter]: a quarter of the triples, chosen that way (components.common.toy.world.quarter_held_out)",
    )
    pairs: int = setting(0, "videos of two shapes of different colours moving independently (videos/pair_NNNN.mp4)")
    pair_scale: float = setting(0.1, "a shape's radius in the two-shape videos, as a share of the frame side")

    def __post_init__(self):
        check_held_out(self.held_out)
        if self.size % 2:
            raise ValueError(f"size={self.size} must be even (H.264 in yuv420p needs even sides)")
        if not 0 <= self.path_spread <= 1:
            raise ValueError(f"path_spread={self.path_spread} must be between 0 and 1")
        if self.grid < 1:
            raise ValueError(f"grid={self.grid} must be 1 (no snapping) or more pixels")
        if self.videos < 0 or self.images < 0 or self.pairs < 0 or not 0 <= self.cut_videos <= self.videos:
            raise ValueError("videos, images and pairs must be >= 0 and cut_videos between 0 and videos")


def video_frames(world: dict, cfg: SynthConfig, num_frames: int) -> np.ndarray:
    path = trajectory(world["direction"], num_frames, cfg.size, world["jitter"], cfg.shape_scale)
    colours = (world["shape"], world["colour"], world["background"], cfg.size)
    return np.stack([render(*colours, x, y, cfg.shape_scale, cfg.grid) for x, y in path])


def synth(cfg: SynthConfig) -> Path:
    """Write the toy world to `cfg.out_dir` (replacing it atomically) and return that folder."""
    rng = np.random.default_rng(cfg.seed)
    held_out = check_held_out(cfg.held_out)
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:
        (tmp / "videos").mkdir()
        (tmp / "images").mkdir()
        rows = []
        num_frames = round(cfg.fps * cfg.seconds)
        for i in tqdm(range(cfg.videos), desc="synth videos", disable=cfg.videos < 8):
            world = sample_world(rng, cfg.path_spread, held_out)
            frames = video_frames(world, cfg, num_frames)
            cut_frame = None
            if i < cfg.cut_videos:  # a second scene with another world, straight after the first
                second = sample_world(rng, cfg.path_spread, held_out)
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
        for i in range(cfg.pairs):  # the caption names both shapes; the columns hold the first one's
            pair = sample_pair(rng, held_out)
            name = f"videos/pair_{i:04d}.mp4"
            write_video(tmp / name, render_pair(pair, cfg.size, num_frames, cfg.pair_scale, cfg.grid), cfg.fps)
            text = pair_caption(pair)
            (tmp / name).with_suffix(".txt").write_text(text + "\n")
            first = {k: v for k, v in pair["objects"][0].items() if k != "jitter"}
            rows.append({"file": name, "kind": "pair", "caption": text, "cut_frame": None, **first,
                         "background": pair["background"]})  # fmt: skip
        with open(tmp / "ground_truth.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=GROUND_TRUTH_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return out
