"""Test media made here with PyAV: good clips, and every kind of bad file ingest must quarantine."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np

from components.common.toy.synth import render
from components.common.video import write_video


def scenes_video(path: Path, scene_frames: list[int], fps: int = 24, size: int = 64, **options) -> Path:
    """A video of len(scene_frames) scenes (each a shape crossing a different background)."""
    frames = []
    for k, n in enumerate(scene_frames):
        background = ("black", "white", "gray")[k % 3]
        colour = ("red", "blue", "green")[k % 3]
        frames += [render("circle", colour, background, size, 10 + 44 * i / max(n - 1, 1), 32) for i in range(n)]
    write_video(path, frames, fps, options=options or None)
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for i in range(20):
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


def _patch_box(data: bytes, box: bytes, patch) -> bytes:
    i = data.find(box)
    assert i > 4, f"no {box!r} box"
    size = struct.unpack(">I", data[i - 4 : i])[0]
    return data[: i - 4] + patch(bytearray(data[i - 4 : i - 4 + size])) + data[i - 4 + size :]


def zero_sample_durations(src: Path, dst: Path) -> Path:
    """Copy an mp4 (written without B-frames) with every sample duration in its `stts` table set to 0."""

    def patch(box: bytearray) -> bytes:
        for k in range(struct.unpack(">I", box[12:16])[0]):
            box[16 + 8 * k + 4 : 16 + 8 * k + 8] = bytes(4)
        return bytes(box)

    dst.write_bytes(_patch_box(src.read_bytes(), b"stts", patch))
    return dst


def zero_timescale(src: Path, dst: Path) -> Path:
    """Copy an mp4 with its video track's `mdhd` time scale set to 0."""

    def patch(box: bytearray) -> bytes:
        offset = 12 + (16 if box[8] == 1 else 8)
        box[offset : offset + 4] = bytes(4)
        return bytes(box)

    dst.write_bytes(_patch_box(src.read_bytes(), b"mdhd", patch))
    return dst


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def sparse(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def wrong_duration(src_mkv: Path, dst: Path, factor: int = 10) -> Path:
    """Copy a Matroska file whose Segment Info claims `factor` times its real duration (EBML Duration element)."""
    data = bytearray(src_mkv.read_bytes())
    i = data.find(b"\x44\x89\x88")  # Duration, an 8-byte float
    assert i > 0, "no 8-byte Duration element"
    (duration,) = struct.unpack(">d", data[i + 3 : i + 11])
    data[i + 3 : i + 11] = struct.pack(">d", duration * factor)
    dst.write_bytes(bytes(data))
    return dst
