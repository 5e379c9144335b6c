"""Frames of one manifest clip for captioning."""

from __future__ import annotations

import numpy as np

from components.common.video import read_clip_frames


def frame_indices(start: int, end: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over [start, end) (centres of equal parts)."""
    n = end - start
    count = max(1, min(count, n))
    return sorted({start + int((k + 0.5) * n / count) for k in range(count)})


def clip_frames(row: dict, count: int) -> list[np.ndarray]:
    """`count` RGB frames (H, W, 3) uint8 spread over the clip's [start_frame, end_frame) of its source."""
    wanted = frame_indices(int(row["start_frame"]), int(row["end_frame"]), count)
    return read_clip_frames(row, wanted)
