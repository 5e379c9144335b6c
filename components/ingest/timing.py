"""A video's timing from the timestamps its decoder hands out, in display order.

Decoders return frames in display order, but some containers give them their timestamps in decode order (B-frame
video in AVI; some camera MP4s): the k-th frame shown is not the frame with the k-th timestamp handed out. Sorting
the timestamps restores the display times. The header's frame rate is used only when the timestamps are
unusable (missing, repeated), and the result says which was used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STANDARD_FPS = (24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48.0, 50.0, 60000 / 1001, 60.0, 120.0)
VFR_SHARE = 0.01  # more irregular frame steps than this share make a video variable-frame-rate


@dataclass(frozen=True)
class Timing:
    fps: float  # the mean rate: frames / duration
    times: np.ndarray  # each frame's display time in seconds from the first frame, in display order
    source: str  # "timestamps" (decoded, in display order) or "header" (the container's frame rate)
    vfr: bool  # the frame steps vary (phones, screen recordings): fps is the mean rate

    @property
    def duration(self) -> float:
        return len(self.times) / self.fps

    @property
    def ends(self) -> np.ndarray:
        """When each frame stops showing: the next frame's time; one mean step after the last frame's."""
        return np.append(self.times[1:], self.times[-1] + 1 / self.fps)


def usable(raw: list[float | None]) -> bool:
    """Timestamps that give each frame its own instant: all present, no two equal, at least two frames."""
    if len(raw) < 2 or any(t is None for t in raw):
        return False
    values = np.asarray(raw, dtype=np.float64)
    return bool(np.isfinite(values).all()) and len(np.unique(values)) == len(values)


def timing(
    raw: list[float | None],
    header_fps: float | None,
    tick: float,
    header_frames: int | None = None,
    header_duration: float | None = None,
) -> Timing | None:
    """Timing of decoded frames whose timestamps (seconds, in the order the decoder returned the frames) are `raw`;
    `tick` is the stream's time base in seconds. None when neither the timestamps nor the header give a rate."""
    n = len(raw)
    if usable(raw):
        times = np.sort(np.asarray(raw, dtype=np.float64))
        times -= times[0]
        steps = np.diff(times)
        median = float(np.median(steps))
        irregular = np.abs(steps - median) > max(tick, 0.01 * median) + 1e-9
        if float(irregular.mean()) > VFR_SHARE:
            return Timing((n - 1) / float(times[-1]), times, "timestamps", True)  # the mean rate
        # constant rate: the slope of a line through all the times, which a stray timestamp (guessed for the last
        # frames of some AVIs) or rounding (Matroska's milliseconds) hardly moves
        slope = float(np.polyfit(np.arange(n, dtype=np.float64), times, 1)[0])
        return Timing(snap_fps(1 / slope), times, "timestamps", False)
    if header_fps and math.isfinite(header_fps) and header_fps > 0:
        if header_frames and header_duration and abs(header_frames / header_fps / header_duration - 1) > 0.02:
            return None  # the header contradicts itself (its rate, frame count and duration disagree)
        return Timing(header_fps, np.arange(n, dtype=np.float64) / header_fps, "header", False)
    return None


def snap_fps(fps: float, tolerance: float = 2e-3) -> float:
    """The standard rate within 0.2% of `fps` (timestamp rounding, e.g. Matroska's milliseconds), else `fps`."""
    nearest = min(STANDARD_FPS, key=lambda r: abs(r - fps))
    return nearest if abs(nearest - fps) <= tolerance * nearest else fps


def sampling_stride(raw: list[float | None], header_fps: float | None, interval: float) -> int:
    """Frames between the ones kept for scoring (about `interval` seconds), from the rate of the first decoded
    frames' timestamps (sorted: some containers hand them out in decode order), the header's only when they are
    unusable: the same stream in MP4, MKV or AVI (whose header may count B-frame video at twice its rate) is
    sampled at the same frames, so its clips get the same scores and perceptual hashes."""
    steps = np.diff(np.unique([t for t in raw if t is not None]))
    step = float(np.median(steps)) if len(steps) else 0.0
    rate = 1 / step if step > 0 else header_fps or 25.0
    return max(1, round(rate * interval))


def lost_frames(n: int, times: np.ndarray, header_frames: int | None, tick: float, share: float) -> str | None:
    """Why a file that decodes `n` frames at display `times` has lost frames, or None: fewer than `share` of the
    frames its header counts, and of those its timestamps imply (its length over their shortest step: the rate it
    was made at). Both must say so: an AVI header counts B-frame video at twice its rate, and a variable-rate
    file's steps vary (a screen recording's header counts what it holds)."""
    if not header_frames or n >= share * header_frames or n < 3:
        return None
    unit = max(tick, 1e-4)
    steps = np.round(np.diff(times) / unit)
    shortest = float(steps[steps > 0].min()) * unit if (steps > 0).any() else 0.0
    implied = round(float(times[-1]) / shortest) + 1 if shortest > 0 else n
    if n >= share * implied:
        return None
    return (
        f"decodes {n} frames where its header counts {header_frames} and its timestamps imply {implied} (every "
        f"{shortest:.4g} s over {float(times[-1]):.2f} s): {100 * (1 - n / implied):.0f}% of "
        "its frames are lost"
    )
