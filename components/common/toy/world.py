"""The toy world's vocabulary and drawing: colours, shapes, directions and backgrounds, a shape rendered on a frame,
the path of a moving shape, two shapes moving at once, and combinations held out of training. The synth step
(components/synth) writes videos and stills of it; evaluation's detector (components/evaluate/adherence.py) reads
generated videos with the same palette."""

from __future__ import annotations

from itertools import combinations, product

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


def trajectory(
    direction: str, num_frames: int, size: int, jitter: float, scale: float = 0.14, lane: float = 0.0
) -> np.ndarray:
    """(num_frames, 2) centres crossing most of the frame in `direction`; `jitter` in [0, 1) shifts the path across
    the free width, the shape (radius `scale` x size) staying inside the frame, and `lane` moves it that many pixels
    further (the lanes of a combination's repeats)."""
    dx, dy = DIRECTIONS[direction]
    margin = size * max(0.2, scale + 0.04)
    progress = np.linspace(margin, size - margin, num_frames)
    across = margin + jitter * (size - 2 * margin) + lane
    xs = progress if dx > 0 else (size - progress if dx < 0 else np.full(num_frames, across))
    ys = progress if dy > 0 else (size - progress if dy < 0 else np.full(num_frames, across))
    return np.stack([xs, ys], axis=1)


def draw_jitter(rng: np.random.Generator, spread: float) -> float:
    """Where a path runs across the frame, as `trajectory`'s `jitter`: uniform within `spread` around the middle."""
    return float(rng.uniform(0.5 - spread / 2, 0.5 + spread / 2))


def sample_world(rng: np.random.Generator, spread: float = 0.6, held_out: frozenset = frozenset()) -> dict:
    """One shape's world, drawn again until its (colour, shape, direction) is not one `held_out` names."""
    while True:
        world = {
            "colour": str(rng.choice(list(COLOURS))),
            "shape": str(rng.choice(SHAPES)),
            "direction": str(rng.choice(list(DIRECTIONS))),
            "background": str(rng.choice(list(BACKGROUNDS))),
            "jitter": draw_jitter(rng, spread),
        }
        if (world["colour"], world["shape"], world["direction"]) not in held_out:
            return world


def sample_pair(rng: np.random.Generator, held_out: frozenset = frozenset()) -> dict:
    """Two shapes of different colours, each with its own shape and direction (no combination `held_out` names), on one
    background; the first runs in a lane near one side of the frame, the second near the other, so that their paths
    cross at most once."""
    colours = [str(c) for c in rng.choice(list(COLOURS), size=2, replace=False)]
    objects = []
    for colour, lane in zip(colours, (0.1, 0.9), strict=True):
        while True:
            shape, direction = str(rng.choice(SHAPES)), str(rng.choice(list(DIRECTIONS)))
            if (colour, shape, direction) not in held_out:
                break
        objects.append({"colour": colour, "shape": shape, "direction": direction, "jitter": lane})
    return {"objects": objects, "background": str(rng.choice(list(BACKGROUNDS)))}


def pair_caption(pair: dict) -> str:
    a, b = pair["objects"]
    return (f"a {a['colour']} {a['shape']} moves {a['direction']} and a {b['colour']} {b['shape']} moves "
            f"{b['direction']} on a {pair['background']} background")  # fmt: skip


def render_pair(pair: dict, size: int, num_frames: int, scale: float, grid: int = 1) -> np.ndarray:
    """(num_frames, size, size, 3) uint8: both shapes along their paths, the second drawn over the first."""
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    frames[:] = BACKGROUNDS[pair["background"]]
    for obj in pair["objects"]:
        path = trajectory(obj["direction"], num_frames, size, obj["jitter"], scale)
        for frame, (x, y) in zip(frames, path, strict=True):
            cx, cy, radius = snap(x, y, size * scale, grid)
            frame[shape_mask(obj["shape"], size, cx, cy, radius)] = COLOURS[obj["colour"]]
    return frames


def quarter_held_out() -> tuple[str, ...]:
    """A quarter of the colour x shape x direction triples, "colour shape direction": colour i and shape j with
    direction (i + j) mod 4, so that every colour, shape and direction, and every pair of them, still occurs in the
    other three quarters (`check_held_out`)."""
    colours, directions = list(COLOURS), list(DIRECTIONS)
    return tuple(f"{colour} {shape} {directions[(i + j) % len(directions)]}"
                 for (i, colour), (j, shape) in product(enumerate(colours), enumerate(SHAPES)))  # fmt: skip


def check_held_out(held_out: tuple[str, ...]) -> frozenset[tuple[str, str, str]]:
    """The triples `held_out` names ("colour shape direction", or the one word "quarter": `quarter_held_out`), refused
    by name when a word is not the toy world's or when holding them out would leave an attribute, or a pair of
    attributes, with no training video."""
    if tuple(held_out) == ("quarter",):
        held_out = quarter_held_out()
    triples = set()
    for item in held_out:
        words = tuple(item.split())
        if len(words) != 3 or words[0] not in COLOURS or words[1] not in SHAPES or words[2] not in DIRECTIONS:
            raise ValueError(f"held_out: {item!r} is not 'colour shape direction' with a colour of {list(COLOURS)}, a "
                             f"shape of {list(SHAPES)} and a direction of {list(DIRECTIONS)}")  # fmt: skip
        triples.add(words)
    seen = set(product(COLOURS, SHAPES, DIRECTIONS)) - triples
    values = {"colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS)}
    for (i, a), (j, b) in combinations(enumerate(values), 2):  # every pair still seen: every single one too
        for x, y in product(values[a], values[b]):
            if not any(t[i] == x and t[j] == y for t in seen):
                raise ValueError(f"held_out leaves no training video with {a} {x} and {b} {y}: hold out fewer of them")
    return frozenset(triples)
