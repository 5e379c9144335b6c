"""Video files through PyAV: reading chosen frames, writing encoded mp4s; atomic file helpers shared by the steps."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import av
import fsspec
import numpy as np
from PIL import Image

from components.common.files import atomic_path


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    codec: str = "libx264",
    crf: int = 18,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> None:
    """Encode RGB frames (H, W, 3) uint8 to `path` (container from the suffix), atomically."""
    with atomic_path(path) as tmp, av.open(str(tmp), "w", options=container_options or {}) as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    # x264's macroblock-tree lookahead makes the bytes differ between runs on a busy machine;
                    # without it the same frames always give the same file (content hashes, DVC md5s stay put)
                    x264 = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0:rc-lookahead=0"}
                    stream.options = {**x264, **(options or {})}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        for packet in stream.encode():
            container.mux(packet)


def read_frames(source: str, indices: list[int], fps: float, *, image: bool = False) -> list[np.ndarray]:
    """RGB frames (H, W, 3) uint8 at sorted frame `indices` of a video (path or fsspec URL), seeking to the
    first; the file's only frame when `image`. A frame's index is its timestamp times `fps` (decoded timing)."""
    with fsspec.open(source, "rb") as f:
        if image:
            with Image.open(f) as img:
                return [np.asarray(img.convert("RGB"))]
        frames: list[np.ndarray] = []
        with av.open(f) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            base = stream.start_time or 0
            tb = float(stream.time_base)
            container.seek(base + int(indices[0] / fps / tb), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                index = round((frame.time - base * tb) * fps)
                while len(frames) < len(indices) and index >= indices[len(frames)]:
                    frames.append(frame.to_ndarray(format="rgb24"))  # repeated if the video skips ahead
                if len(frames) == len(indices):
                    break
    if len(frames) < len(indices):
        raise ValueError(f"{source}: {len(frames)} of the {len(indices)} frames asked for exist (up to {indices[-1]})")
    return frames
