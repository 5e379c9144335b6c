"""Test media made here with PyAV: good clips, and every kind of bad file ingest must quarantine."""

from __future__ import annotations

import json
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from components.common.toy.world import render
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


# ----------------------------------------------------------------------------------------- conformance matrix
# Files as common sources make them, written by Debian's ffmpeg (the Makefile installs it). Each is testsrc2 (a
# moving pattern with a frame counter): 320x240, 25 fps, 4 s, unless its entry says otherwise. `times` are the
# display times every frame was made with: the truth the analysis is checked against.
SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4"]
VFR_SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=6"]
VFR_KEEP = [n for n in range(180) if n % 10 < 6 or n >= 90]  # 30 fps frames kept: 4 of 10 dropped in the first 3 s
X264_B = ["-c:v", "libx264", "-bf", "3", "-x264-params", "b-pyramid=normal", "-pix_fmt", "yuv420p"]
MATRIX = {
    "h264_bpyramid.mp4": [*SOURCE, *X264_B],
    "h264_bframes.avi": ["<h264_bpyramid.mp4", "-c", "copy"],  # display-order frames, decode-order timestamps
    "mpeg4_bframes.avi": [*SOURCE, "-c:v", "mpeg4", "-bf", "2", "-q:v", "5"],
    "vp9.webm": [*SOURCE, "-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "45", "-deadline", "realtime", "-cpu-used", "8"],
    "h264.ts": ["<h264_bpyramid.mp4", "-c", "copy", "-f", "mpegts"],
    "h264.mov": [*SOURCE, *X264_B, "-f", "mov"],
    "vfr.mkv": [*VFR_SOURCE, "-vf", "select='lt(mod(n,10),6)+gte(n,90)'", "-fps_mode", "vfr", *X264_B],
    "rotated.mp4": ["<h264_bpyramid.mp4", "-c", "copy", "-metadata:s:v:0", "rotate=90"],  # a phone held upright
    "interlaced.ts": [*SOURCE, "-c:v", "libx264", "-flags", "+ildct+ilme", "-x264-params", "tff=1", "-bf", "2"],
    "h264_10bit.mkv": [*SOURCE, "-c:v", "libx264", "-pix_fmt", "yuv420p10le"],
    "raw.h264": ["<h264_bpyramid.mp4", "-c", "copy", "-f", "h264"],  # no timestamps at all: the header's rate
    "h264.mkv": ["<h264_bpyramid.mp4", "-c", "copy"],  # the MP4's stream again: millisecond timestamps
}
# one stream with B-frames in three containers: the same frames, so the same clips and perceptual hashes
SAME_STREAM = ("h264_bpyramid.mp4", "h264_bframes.avi", "h264.mkv")


def broken(root: Path) -> dict[str, Path]:
    """Files ingest must not keep as they are: `tiny.mp4`, 2 x 2 pixels for 5 s; `lost_frames.avi`, a 15 fps
    stream of 30 s of which 15% of the frames survive, scattered, their timestamps kept (an MP4 of those frames
    copied into AVI at 15 fps, whose header then counts every frame slot of the 30 s)."""
    root.mkdir(parents=True, exist_ok=True)
    run = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i"]
    tiny, sparse, lost = root / "tiny.mp4", root / "sparse.mp4", root / "lost_frames.avi"
    subprocess.run([*run, "color=c=red:size=2x2:rate=10:duration=5", *X264_B, str(tiny)], check=True)
    keep = "select='lt(mod(n*n*7919+n*104729\\,1000)\\,150)'"  # a scattered 15% of the frames
    subprocess.run([*run, "testsrc2=size=96x64:rate=15:duration=30", "-vf", keep, "-fps_mode", "vfr", "-c:v",
                    "libx264", "-bf", "0", "-pix_fmt", "yuv420p", str(sparse)], check=True)  # fmt: skip
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(sparse), "-c", "copy", "-r", "15", str(lost)], check=True)
    sparse.unlink()
    return {"tiny.mp4": tiny, "lost_frames.avi": lost}


def matrix_times(name: str) -> np.ndarray:
    """The display time of every frame of a matrix file, as it was made."""
    if name == "vfr.mkv":
        return np.array(VFR_KEEP, dtype=np.float64) / 30
    return np.arange(100, dtype=np.float64) / 25


def make_matrix(root: Path) -> dict[str, Path]:
    """Every file of MATRIX under `root`, and `lying_duration.mkv` (a header claiming 10 times its duration)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, args in MATRIX.items():
        if args[0].startswith("<"):
            args = ["-i", str(paths[args[0][1:]]), *args[1:]]
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(root / name)], check=True)
        paths[name] = root / name
    mkv = root / "plain.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", *SOURCE, *X264_B, str(mkv)], check=True)
    paths["lying_duration.mkv"] = wrong_duration(mkv, root / "lying_duration.mkv")
    mkv.unlink()
    return paths


def ffprobe(path: Path) -> dict:
    """ffprobe's view of the first video stream: average frame rate, frames it decodes, duration (seconds)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-of", "json", "-show_entries",
         "stream=avg_frame_rate,nb_read_frames,duration:format=duration", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    facts = json.loads(out)
    stream, container = facts["streams"][0], facts.get("format", {})
    duration = stream.get("duration") or container.get("duration")
    return {
        "avg_frame_rate": float(Fraction(stream["avg_frame_rate"])) if stream["avg_frame_rate"] != "0/0" else None,
        "frames": int(stream["nb_read_frames"]),
        "duration": float(duration) if duration not in (None, "N/A") else None,
    }


def ffmpeg_frames(path: Path) -> np.ndarray:
    """Every frame ffmpeg decodes (each once, upright, RGB): an independent decode to check readers against."""
    from components.common.video import iter_frames  # for the frame size only

    _, first = next(iter_frames(str(path)))
    h, w = first.shape[:2]
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-"], check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
