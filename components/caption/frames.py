"""Frames of one manifest clip, read with PyAV (videos) or PIL (images)."""

from __future__ import annotations

import av
import fsspec
import numpy as np
from PIL import Image


def frame_indices(start: int, end: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over [start, end) (centres of equal parts)."""
    n = end - start
    count = max(1, min(count, n))
    return sorted({start + int((k + 0.5) * n / count) for k in range(count)})


def clip_frames(row: dict, count: int) -> list[np.ndarray]:
    """`count` RGB frames (H, W, 3) uint8 spread over the clip's [start_frame, end_frame) of its source."""
    source = row["source"]
    with fsspec.open(source, "rb") as f:
        if row.get("kind") == "image":
            with Image.open(f) as image:
                return [np.asarray(image.convert("RGB"))]
        wanted = frame_indices(int(row["start_frame"]), int(row["end_frame"]), count)
        fps = float(row["fps"])
        frames: list[np.ndarray] = []
        with av.open(f) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            base = stream.start_time or 0
            tb = float(stream.time_base)
            container.seek(base + int(wanted[0] / fps / tb), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                index = round((frame.time - base * tb) * fps)  # the frame's index counted from the start
                if index >= wanted[len(frames)]:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if len(frames) == len(wanted):
                        break
    if not frames:
        raise ValueError(f"{source}: no frames in [{row['start_frame']}, {row['end_frame']})")
    return frames
