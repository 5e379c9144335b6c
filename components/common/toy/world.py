"""The toy world's vocabulary and drawing: colours, shapes, directions and backgrounds, a shape rendered on a frame,
the path of a moving shape. The synth step (components/synth) writes videos and stills of it; evaluation's detector
(components/evaluate/adherence.py) reads generated videos with the same palette."""

from __future__ import annotations

import numpy as np

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUNDS = {"black": (10, 10, 10), "white": (240, 240, 240), "gray": (128, 128, 128)}


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
