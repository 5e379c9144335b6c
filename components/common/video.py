"""Video files through PyAV: reading chosen frames, writing encoded mp4s; atomic file helpers shared by the steps."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction

import av
import fsspec
import numpy as np
from PIL import Image

from components.common.files import atomic_path

log = logging.getLogger(__name__)


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


def iter_frames(source: str, start_frame: int = 0, seek_time: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame (H, W, 3) uint8) of a video (path or fsspec URL) from frame `start_frame` on, in display
    order and upright (the display matrix applied). Frames are counted, not timed: exact on variable frame rate
    and on timestamps handed out in decode order. `seek_time` is the decoder's timestamp of frame `start_frame`
    (ingest's manifest column): the reader seeks to it and counts from the frame that carries it. Without it, or
    where no seek finds it, the video is read from its first frame (slower, same frames)."""
    with fsspec.open(source, "rb") as f, av.open(f) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if seek_time is not None and math.isfinite(seek_time) and start_frame > 0:
            for margin in SEEK_MARGINS:
                frames = _from_anchor(container, stream, seek_time, margin)
                first = next(frames, None)
                if first is not None:
                    yield start_frame, first
                    yield from enumerate(frames, start_frame + 1)
                    return
            log.debug("%s: no frame at seek_time %.6f after seeking; reading from the first frame", source, seek_time)
            container.seek(0, stream=stream, backward=True, any_frame=False)
        for index, frame in enumerate(container.decode(stream)):
            if index >= start_frame:
                yield index, _upright(frame)


# Seconds before the anchor to seek to, tried in turn: containers with an index land on the keyframe before it at
# once; MPEG-TS seeks by position, where decoding restarts only at the next keyframe, so it needs a run-up.
SEEK_MARGINS = (0.0, 2.0, 10.0, 60.0)
REORDER_SECONDS = 2.0  # decode-order timestamps stray at most this far from display order


def _from_anchor(container, stream, seek_time: float, margin: float) -> Iterator[np.ndarray]:
    """Upright frames from the one whose timestamp is `seek_time` on, seeking `margin` seconds before it; nothing
    when decoding resumes past it."""
    tb = float(stream.time_base)
    container.seek(math.floor((seek_time - margin) / tb), stream=stream, backward=True, any_frame=False)
    found = False
    for frame in container.decode(stream):
        if not found:
            if frame.time is not None and abs(frame.time - seek_time) < tb / 2:
                found = True
            elif frame.time is not None and frame.time > seek_time + REORDER_SECONDS:
                return
            else:
                continue
        yield _upright(frame)


def rotation(frame: av.VideoFrame) -> int:
    """Degrees (0, 90, 180, 270) counter-clockwise the frame is turned for display (its display matrix)."""
    return round(getattr(frame, "rotation", 0) / 90) * 90 % 360


def upright(image: np.ndarray, degrees: int) -> np.ndarray:
    """`image` (H, W[, C]) turned `degrees` counter-clockwise, as it is displayed."""
    return np.ascontiguousarray(np.rot90(image, degrees // 90)) if degrees else image


def _upright(frame: av.VideoFrame) -> np.ndarray:
    return upright(frame.to_ndarray(format="rgb24"), rotation(frame))


def read_frames(
    source: str, indices: list[int], *, start_frame: int = 0, seek_time: float | None = None, image: bool = False
) -> list[np.ndarray]:
    """RGB frames (H, W, 3) uint8 at sorted display-order frame `indices` of a video (see `iter_frames`; the anchor
    `start_frame`, `seek_time` is at or before the first index), or the file's only frame when `image`."""
    if image:
        with fsspec.open(source, "rb") as f, Image.open(f) as img:
            return [np.asarray(img.convert("RGB"))]
    frames: list[np.ndarray] = []
    if indices:
        stream = iter_frames(source, *((start_frame, seek_time) if start_frame <= indices[0] else (0, None)))
        for index, frame in stream:
            while len(frames) < len(indices) and indices[len(frames)] == index:
                frames.append(frame)  # an index asked for twice gets the frame twice
            if len(frames) == len(indices):
                stream.close()
                break
    if len(frames) < len(indices):
        raise ValueError(f"{source}: {len(frames)} of the {len(indices)} frames asked for exist (up to {indices[-1]})")
    return frames


def read_clip_frames(row: Mapping, indices: list[int]) -> list[np.ndarray]:
    """Frames at display-order `indices` of a manifest row's source, found from the row's anchor (ingest's
    `start_frame` and `seek_time` columns); the still itself for an image row."""
    seek_time = row.get("seek_time")
    image = row.get("kind") == "image"
    return read_frames(row["source"], indices, start_frame=int(row["start_frame"]), seek_time=seek_time, image=image)
