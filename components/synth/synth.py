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
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from components.common.files import atomic_dir
from components.common.settings import setting
from components.common.toy.world import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    caption,
    check_held_out,
    draw_jitter,
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


def _step(r: int) -> int:
    """The r-th of 0, 1, -1, 2, -2, ...: how many grid cells the r-th repeat of a combination moves aside."""
    return (r + 1) // 2 * (1 if r % 2 else -1)


# the places of a still's repeats, in grid cells from its combination's first: the nearest first
STILL_STEPS = sorted(product(range(-3, 4), repeat=2), key=lambda d: (max(map(abs, d)), abs(d[0]) + abs(d[1]), d))


def video_worlds(cfg: SynthConfig, held_out: frozenset, rng: np.random.Generator) -> list[dict]:
    """The videos' worlds in order, their coverage fixed: rounds over the (colour, shape, direction) triples not held
    out, each triple once per round in a shuffled order and on the next background each round (from one drawn per
    triple), so every triple is shown before any twice and no (triple, background) repeats before the fourth round.
    A combination's path runs at a lane drawn once within `path_spread`; its r-th repeat `grid` pixels aside per
    step of 0, 1, -1, 2, ..."""
    triples = [t for t in product(COLOURS, SHAPES, DIRECTIONS) if t not in held_out]
    backgrounds = list(BACKGROUNDS)
    first = {t: int(rng.integers(len(backgrounds))) for t in triples}
    jitter, repeats, worlds = {}, Counter(), []
    for round_ in range(-(-cfg.videos // len(triples))):
        for i in rng.permutation(len(triples)):
            colour, shape, direction = triples[i]
            combination = (*triples[i], backgrounds[(first[triples[i]] + round_) % len(backgrounds)])
            if combination not in jitter:
                jitter[combination] = draw_jitter(rng, cfg.path_spread)
            lane = _step(repeats[combination]) * cfg.grid
            repeats[combination] += 1
            worlds.append({"colour": colour, "shape": shape, "direction": direction, "background": combination[3],
                           "jitter": jitter[combination], "lane": lane})  # fmt: skip
    return worlds[: cfg.videos]


def still_worlds(cfg: SynthConfig, rng: np.random.Generator) -> list[dict]:
    """The stills' worlds in order: rounds over every (colour, shape, background), shuffled each round; a
    combination's r-th still sits STILL_STEPS[r] grid cells from its first, which is drawn within `path_spread`."""
    combinations = list(product(COLOURS, SHAPES, BACKGROUNDS))
    jitter = {c: draw_jitter(rng, cfg.path_spread) for c in combinations}
    worlds = []
    for round_ in range(-(-cfg.images // len(combinations))):
        if round_ >= len(STILL_STEPS):
            raise ValueError(f"images={cfg.images}: more than {len(STILL_STEPS)} stills of each of the "
                             f"{len(combinations)} combinations would repeat one; ask for fewer images")  # fmt: skip
        dx, dy = STILL_STEPS[round_]
        for i in rng.permutation(len(combinations)):
            (colour, shape, background), j = combinations[i], jitter[combinations[i]]
            x, y = cfg.size * (0.3 + 0.4 * j) + dx * cfg.grid, cfg.size / 2 + dy * cfg.grid
            worlds.append({"colour": colour, "shape": shape, "background": background, "jitter": j, "x": x, "y": y})
    return worlds[: cfg.images]


NEAR_DUPLICATE = 2.0  # mean absolute difference, in grey levels at the size the grid snaps to, under which files alike


class Distinct:
    """Refuses a file whose pixels another file of the world already has (the toy world is a fair test only when
    ingest drops none of it as a copy), and counts near-duplicates: files of one caption whose frames, averaged
    over `grid` x `grid` cells (the training frames the grid is chosen for), differ by under NEAR_DUPLICATE grey
    levels on average."""

    def __init__(self, grid: int = 1):
        self.grid = grid
        self.seen: dict[str, str] = {}
        self.coarse: dict[str, list[np.ndarray]] = {}
        self.near_duplicates = 0

    @staticmethod
    def _digest(pixels: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()

    def new(self, pixels: np.ndarray) -> bool:
        return self._digest(pixels) not in self.seen

    def check(self, name: str, pixels: np.ndarray, fix: str, caption: str = "") -> None:
        digest = self._digest(pixels)
        if digest in self.seen:
            raise ValueError(f"{name} would show the same frames as {self.seen[digest]}: {fix}")
        self.seen[digest] = name
        frames = pixels.reshape(-1, *pixels.shape[-3:]).astype(np.float32)
        t, h, w, c, g = *frames.shape, self.grid
        coarse = frames[:, : h // g * g, : w // g * g].reshape(t, h // g, g, w // g, g, c).mean(axis=(2, 4))
        alike = self.coarse.setdefault(caption, [])
        self.near_duplicates += sum(
            other.shape == coarse.shape and float(np.abs(other - coarse).mean()) < NEAR_DUPLICATE for other in alike
        )
        alike.append(coarse)


def video_frames(world: dict, cfg: SynthConfig, num_frames: int) -> np.ndarray:
    path = trajectory(world["direction"], num_frames, cfg.size, world["jitter"], cfg.shape_scale, world.get("lane", 0))
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
        distinct = Distinct(cfg.grid)
        lanes = "lower videos, or raise path_spread or grid so that a combination's repeats have lanes in the frame"
        for i, world in enumerate(tqdm(video_worlds(cfg, held_out, rng), desc="synth videos", disable=cfg.videos < 8)):
            frames = video_frames(world, cfg, num_frames)
            cut_frame = None
            if i < cfg.cut_videos:  # a second scene with another world, straight after the first
                second = sample_world(rng, cfg.path_spread, held_out)
                second["background"] = next(b for b in BACKGROUNDS if b != world["background"])
                cut_frame = num_frames
                frames = np.concatenate([frames, video_frames(second, cfg, num_frames)])
            name = f"videos/toy_{i:04d}.mp4"
            text = caption(world["colour"], world["shape"], world["background"], world["direction"])
            distinct.check(name, frames, lanes, text)
            write_video(tmp / name, frames, cfg.fps)
            (tmp / name).with_suffix(".txt").write_text(text + "\n")
            rows.append({"file": name, "kind": "video", "caption": text, "cut_frame": cut_frame, **world})
        for i, world in enumerate(still_worlds(cfg, rng)):
            image = render(world["shape"], world["colour"], world["background"], cfg.size, world["x"], world["y"],
                           cfg.shape_scale, cfg.grid)  # fmt: skip
            name = f"images/toy_{i:04d}.png"
            text = caption(world["colour"], world["shape"], world["background"])
            distinct.check(name, image, "ask for fewer images, or raise grid", text)
            Image.fromarray(image).save(tmp / name)
            (tmp / name).with_suffix(".txt").write_text(text + "\n")
            rows.append({"file": name, "kind": "image", "caption": text, "cut_frame": None, **world, "direction": ""})
        for i in range(cfg.pairs):  # the caption names both shapes; the columns hold the first one's
            for _ in range(100):  # drawn again while its frames are another file's
                pair = sample_pair(rng, held_out)
                frames = render_pair(pair, cfg.size, num_frames, cfg.pair_scale, cfg.grid)
                if distinct.new(frames):
                    break
            name = f"videos/pair_{i:04d}.mp4"
            text = pair_caption(pair)
            distinct.check(name, frames, "ask for fewer pairs", text)
            write_video(tmp / name, frames, cfg.fps)
            (tmp / name).with_suffix(".txt").write_text(text + "\n")
            first = {k: v for k, v in pair["objects"][0].items() if k != "jitter"}
            rows.append({"file": name, "kind": "pair", "caption": text, "cut_frame": None, **first,
                         "background": pair["background"]})  # fmt: skip
        with open(tmp / "ground_truth.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=GROUND_TRUTH_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        kinds = Counter(row["kind"] for row in rows)
        per_triple = Counter((r["colour"], r["shape"], r["direction"]) for r in rows if r["kind"] == "video")
        summary = {
            "files": len(rows), "videos": kinds["video"], "stills": kinds["image"], "pairs": kinds["pair"],
            "identical_files": len(rows) - len(distinct.seen),  # files whose pixels another file has
            "near_duplicates": distinct.near_duplicates,
            "held_out": sorted(" ".join(t) for t in held_out),
            # how often the least and the most shown (colour, shape, direction) triple is shown
            "videos_per_triple": [min(per_triple.values(), default=0), max(per_triple.values(), default=0)],
        }  # fmt: skip
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out
