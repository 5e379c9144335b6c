"""Prompt adherence on the toy world: read the colour, shape, motion direction and background of the one shape in
a video, and compare them with what its prompt asked for.

The detector knows only the toy world's palette (components/synth/synth.py), not the model:
- background: the median colour of the frame borders, nearest palette background;
- shape pixels: those far from the background colour; per frame the largest connected region;
- colour: the median colour of those pixels, nearest palette colour;
- shape: the one that overlaps the region best, per frame, median over frames. The region is read as coverage (how
  far each pixel is from the background towards the shape's colour, 0..1), so a pixel a model drew half-way counts
  half; each shape is drawn with the region's area and centre of mass, 4x finer than the frame and averaged down,
  and scored by the overlap of the two coverages (sum of minima over sum of maxima). No threshold to set: a
  square whose edge a model smeared by half a pixel still overlaps a square more than a circle, at 16 px too;
- direction: the sign of the larger of the horizontal and vertical slopes of the region's centre over time
  ("none" when it moves less than a pixel in all; "" for single frames, which rest).
Two shapes at once (`detect_objects`) are told apart by colour: each region takes the palette colour nearest its
median, and each of the two colours covering the most pixels is read as one shape is, on its own regions.
`displacement` measures how far the shape travels in the direction asked, from the same straight-line fit: a
model can read the right direction while moving a fraction of the distance the footage moves.
"""

from __future__ import annotations

import re
from collections import Counter

import cv2
import numpy as np

from components.common.toy.world import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, shape_mask

ATTRIBUTES = ("colour", "shape", "direction", "background")
# chance per attribute for a model that ignores its prompt, in the toy world (labels drawn uniformly)
CHANCE = {"colour": 1 / len(COLOURS), "shape": 1 / len(SHAPES), "direction": 1 / len(DIRECTIONS),
          "background": 1 / len(BACKGROUNDS)}  # fmt: skip
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that marks a shape pixel
SUPERSAMPLE = 4  # shapes are drawn this much finer than the frame and averaged down to coverage


def _nearest(value: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    return min(palette, key=lambda name: float(np.sum((np.asarray(palette[name], np.float64) - value) ** 2)))


def _background(frames: np.ndarray) -> np.ndarray:
    """The median colour of the frames' borders."""
    border = np.concatenate(
        [frames[:, 0].reshape(-1, 3), frames[:, -1].reshape(-1, 3), frames[:, :, 0].reshape(-1, 3),
         frames[:, :, -1].reshape(-1, 3)]
    )  # fmt: skip
    return np.median(border, axis=0)


def _coverage(shape: str, height: int, width: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """(height, width) share of each pixel that `shape` (centre and radius in pixels) covers."""
    k = SUPERSAMPLE
    fine = shape_mask(shape, max(height, width) * k, cx * k, cy * k, radius * k)[: height * k, : width * k]
    return fine.reshape(height, k, width, k).mean(axis=(1, 3))


def _shape_scores(frame: np.ndarray, distance: np.ndarray, region: np.ndarray, allowed: np.ndarray,
                  background: np.ndarray) -> dict[str, float]:  # fmt: skip
    """How well each shape overlaps `region` (a mask of `frame`): the region and its 1-px ring (within `allowed`)
    as coverage, each shape drawn with its area and centre of mass, the overlap sum(min) / sum(max)."""
    colour = np.median(frame[region], axis=0)
    near = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & allowed
    cover = np.clip(distance / max(float(np.linalg.norm(colour - background)), 1e-6), 0.0, 1.0) * near
    area = float(cover.sum())
    ys, xs = np.nonzero(near)
    yy, xx = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]] + 0.5
    cx, cy = float((cover * xx).sum()) / area, float((cover * yy).sum()) / area
    reach = int(np.ceil(np.sqrt(area))) + 2  # no shape of this area and centre reaches further
    top, left = max(0, min(ys.min(), int(cy) - reach)), max(0, min(xs.min(), int(cx) - reach))
    bottom = min(frame.shape[0], max(ys.max() + 1, int(cy) + reach))
    right = min(frame.shape[1], max(xs.max() + 1, int(cx) + reach))
    cover, cx, cy = cover[top:bottom, left:right], cx - left, cy - top
    radii = {"circle": np.sqrt(area / np.pi), "square": np.sqrt(area) / 2, "triangle": np.sqrt(area / 2)}
    scores = {}
    for shape in SHAPES:  # a triangle's centre of mass lies a third of its radius below its box's centre
        radius = float(radii[shape])
        drawn = _coverage(shape, *cover.shape, cx, cy - radius / 3 if shape == "triangle" else cy, radius)
        scores[shape] = float(np.minimum(cover, drawn).sum() / np.maximum(cover, drawn).sum())
    return scores


def _track(video: np.ndarray, masks: np.ndarray | None = None):
    """Per frame where the shape is found (the largest region of its mask: by default every pixel far from the
    background): its pixels, how well each shape overlaps it (`_shape_scores`), its centre (x, y) and the frame's
    index; and the background colour."""
    frames = video.astype(np.float64)
    background = _background(frames)
    distance = np.linalg.norm(frames - background, axis=-1)
    foreground = distance > FOREGROUND_DISTANCE
    if masks is None:
        masks = foreground
    min_area = max(4, round(video.shape[1] * video.shape[2] * 0.002))
    pixels, scores, centres, times = [], [], [], []
    for t, (frame, mask) in enumerate(zip(frames, masks.astype(np.uint8), strict=True)):
        count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count < 2:
            continue
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if int(stats[best, cv2.CC_STAT_AREA]) < min_area:
            continue
        region = labels == best
        pixels.append(frame[region])
        # the ring around the region may not take another shape's pixels (two shapes: `detect_objects`)
        scores.append(_shape_scores(frame, distance[t], region, ~(foreground[t] & ~mask.astype(bool)), background))
        centres.append(centroids[best])
        times.append(t)
    return background, pixels, scores, centres, times


def _shape_and_direction(scores: list[dict], centres: list, times: list[int], num_frames: int) -> dict[str, str]:
    """The shape that overlaps the region best (median over frames), the direction from its centre's straight-line
    fit."""
    median = {shape: float(np.median([s[shape] for s in scores])) for shape in SHAPES}
    out = {"shape": max(SHAPES, key=median.get), "direction": "none"}
    if num_frames == 1:
        out["direction"] = ""
    elif len(times) >= 2:
        xy = np.asarray(centres)
        slopes = [float(np.polyfit(times, xy[:, axis], 1)[0]) for axis in (0, 1)]
        axis = int(np.argmax(np.abs(slopes)))
        if abs(slopes[axis]) * (times[-1] - times[0]) >= 1.0:
            forward = slopes[axis] > 0
            out["direction"] = ("left", "right")[forward] if axis == 0 else ("up", "down")[forward]
    return out


def detect(video: np.ndarray) -> dict[str, str]:
    """The attributes a uint8 video (T, H, W, 3) shows; "none" for what cannot be found."""
    background, pixels, scores, centres, times = _track(video)
    out = {"background": _nearest(background, BACKGROUNDS), "colour": "none", "shape": "none", "direction": "none"}
    if len(video) == 1:
        out["direction"] = ""
    if not pixels:
        return out
    out["colour"] = _nearest(np.median(np.concatenate(pixels), axis=0), COLOURS)
    return {**out, **_shape_and_direction(scores, centres, times, len(video))}


def detect_objects(video: np.ndarray, count: int = 2) -> list[dict[str, str]]:
    """The `count` shapes a video shows, told apart by colour: each region far from the background takes the palette
    colour nearest its median (its blurred edges included, as `detect` keeps them), and the colours covering the
    most pixels over the clip are read one by one as `detect` reads one shape (most first)."""
    frames = video.astype(np.float64)
    foreground = (np.linalg.norm(frames - _background(frames), axis=-1) > FOREGROUND_DISTANCE).astype(np.uint8)
    masks = {name: np.zeros(foreground.shape, bool) for name in COLOURS}
    for t, frame in enumerate(frames):
        regions, labels = cv2.connectedComponents(foreground[t], connectivity=8)
        for region in range(1, regions):
            inside = labels == region
            masks[_nearest(np.median(frame[inside], axis=0), COLOURS)][t] |= inside
    covered = {name: int(mask.sum()) for name, mask in masks.items()}
    found = []
    for name in sorted((n for n in covered if covered[n]), key=covered.get, reverse=True)[:count]:
        _, _, scores, centres, times = _track(video, masks[name])
        if scores:
            found.append({"colour": name, **_shape_and_direction(scores, centres, times, len(video))})
    return found


def displacement(video: np.ndarray, direction: str) -> float:
    """How many pixels the shape travels over the whole clip in `direction` (negative: the other way), from the
    straight line fitted to its centre over the frames it is found in (as `detect` fits it); 0 when it is found in
    fewer than two frames."""
    _, _, _, centres, times = _track(video)
    if len(times) < 2:
        return 0.0
    dx, dy = DIRECTIONS[direction]
    axis, sign = (0, dx) if dx else (1, dy)
    slope = float(np.polyfit(times, np.asarray(centres)[:, axis], 1)[0])
    return sign * slope * (len(video) - 1)


_PATTERNS = {
    "colour": re.compile(rf"\b({'|'.join(COLOURS)})\b", re.I),
    "shape": re.compile(rf"\b({'|'.join(SHAPES)})\b", re.I),
    "direction": re.compile(rf"\bmoves\s+({'|'.join(DIRECTIONS)})\b", re.I),
    "background": re.compile(rf"\b({'|'.join(BACKGROUNDS)})\s+background\b", re.I),
}


_PAIR = re.compile(
    rf"\ba ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) moves ({'|'.join(DIRECTIONS)}) and a ({'|'.join(COLOURS)}) "
    rf"({'|'.join(SHAPES)}) moves ({'|'.join(DIRECTIONS)}) on a ({'|'.join(BACKGROUNDS)}) background\b",
    re.I,
)


def parse_pair_prompt(prompt: str) -> list[dict[str, str]] | None:
    """The two shapes a two-shape prompt asks for ("a red square moves left and a blue circle moves up on a black
    background"), each {colour, shape, direction}; None for any other prompt."""
    m = _PAIR.search(prompt)
    if not m:
        return None
    words = [w.lower() for w in m.groups()]
    return [dict(zip(("colour", "shape", "direction"), words[i : i + 3], strict=True)) for i in (0, 3)]


def pair_scores(asked: list[list[dict[str, str]]], detected: list[list[dict[str, str]]]) -> dict[str, float]:
    """`objects`: the share of the shapes asked for that are found in their colour with their shape and direction;
    `both`: the share of prompts with both shapes right."""
    right = [[obj in found for obj in pair] for pair, found in zip(asked, detected, strict=True)]
    return {
        "objects": float(np.mean([r for pair in right for r in pair])),
        "both": float(np.mean([all(r) for r in right])),
    }


def chance_mean(metrics: dict[str, float]) -> float:
    """The `adherence/mean` a model guessing at random would score: the mean chance level of the attributes scored
    (an untrained or tiny model scores about this, or less when it draws no shape at all)."""
    return float(np.mean([CHANCE[name] for name in ATTRIBUTES if f"adherence/{name}" in metrics]))


def parse_prompt(prompt: str) -> dict[str, str]:
    """The attributes a toy-world prompt names (lower case); a still's prompt ("... rests ...") asks for direction
    "". Attributes the prompt does not name are left out."""
    found = {name: m.group(1).lower() for name, pattern in _PATTERNS.items() if (m := pattern.search(prompt))}
    if "direction" not in found and re.search(r"\brests\b", prompt, re.I):
        found["direction"] = ""
    return found


def accuracy(asked: list[dict[str, str]], detected: list[dict[str, str]]) -> dict[str, float]:
    """Per attribute, the share of videos whose detected value equals the asked one, over the videos whose prompt
    names it (direction: over videos only); attributes no prompt names are left out."""
    out = {}
    for name in ATTRIBUTES:
        pairs = [(a[name], d[name]) for a, d in zip(asked, detected, strict=True) if a.get(name)]
        if pairs:
            out[name] = float(np.mean([a == d for a, d in pairs]))
    return out


def shuffle_chance(labels: list[str]) -> tuple[float, float]:
    """(mean, standard deviation) of the accuracy of a detector that reads every video right, scored against the
    same labels in a random order: the chance level for this label distribution. The mean is the probability
    that two different videos share a label, sum n_k (n_k - 1) / (n (n - 1)); the deviation is the binomial one
    at that rate over n videos."""
    n = len(labels)
    if n < 2:
        raise ValueError("chance needs at least two labels")
    p = sum(c * (c - 1) for c in Counter(labels).values()) / (n * (n - 1))
    return p, float(np.sqrt(p * (1 - p) / n))
