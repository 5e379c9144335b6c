"""Ingest throughput against the floor no ingest can beat: decoding the same files and nothing else.

Generates H.264 test videos of moving textures with scene cuts, then times on the same files, one process each:
  decode-only   open and decode every frame (PyAV, same threading as ingest)
  ingest rows   the default mode: hash, decode once, scene detection, scores, filters, manifest
  ingest copy   rows + clip files by stream copy
  ingest reenc  rows + frame-exact re-encoded clip files
Each ingest starts without a cache; before any timing, one decode and one ingest of the first file warm the page
cache and what a process sets up once (codec, imports, OpenCV). The timings alternate (decode-only, then each mode)
for `--repeat` rounds and each figure is the median of its rounds, so a burst of load on a shared machine moves one
round, not the result. Throughput is clips per second, and per core (divided by the cores the process may use).

The goal for the default mode is 90% or more of decode-only throughput: beside decoding, its per-frame work (scene
detection on a small copy, small grayscale frames kept for the scores) costs next to nothing, and a file's clip
scores (optical flow, sharpness) are computed on a second thread while the next file decodes.

    python benchmarks/ingest.py                 # 12 videos of 1280x720, 9 s, 3 scenes each
    python benchmarks/ingest.py --quick         # 3 videos of 640x360 (CI)
    python benchmarks/ingest.py --modes rows    # only the default mode (the re-encode takes most of a full run)
    python benchmarks/ingest.py --repeat 5      # more rounds (default 3; 1 with --quick)

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from components.common.video import write_video
from components.ingest.config import CLIP_MODES, IngestConfig
from components.ingest.ingest import ingest


def texture_video(path: Path, rng: np.random.Generator, *, width: int, height: int, fps: int, scenes: int, seconds):
    """Scenes of a tinted random texture (detail at 4-pixel scale) panning in a random direction; hard cuts."""
    frames_per_scene = int(fps * seconds / scenes)

    def frames():
        for _ in range(scenes):
            tint = rng.integers(40, 216, 3)  # scenes differ in colour, as shots do
            detail = rng.integers(-40, 41, (height // 2, width // 2, 3))
            texture = np.clip(tint + np.repeat(np.repeat(detail, 4, axis=0), 4, axis=1), 0, 255).astype(np.uint8)
            dy, dx = rng.integers(-3, 4, size=2)
            for t in range(frames_per_scene):
                y, x = (height // 2 + dy * t) % height, (width // 2 + dx * t) % width
                yield texture[y : y + height, x : x + width]

    write_video(path, frames(), fps, crf=23)


def decode_only(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                pass
    return time.perf_counter() - start


def timed_ingest(src: Path, out: Path, mode: str) -> tuple[float, int]:
    cfg = IngestConfig(inputs=(str(src),), out_dir=str(out), clip_mode=mode, progress=False)
    start = time.perf_counter()
    result = ingest(cfg)
    return time.perf_counter() - start, result.clips


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 small videos (for CI)")
    parser.add_argument("--videos", type=int, default=None)
    parser.add_argument(
        "--modes",
        type=lambda text: text.split(","),
        default=list(CLIP_MODES),
        help=f"comma-separated clip modes to time (default: all, {','.join(CLIP_MODES)})",
    )
    parser.add_argument("--repeat", type=int, default=None, help="rounds of timings; figures are medians (default 3)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    if repeat < 1:
        parser.error(f"--repeat {repeat}: give 1 or more rounds")
    unknown = sorted(set(args.modes) - set(CLIP_MODES))
    if unknown:
        parser.error(f"--modes: no clip mode {', '.join(unknown)}; choose from {','.join(CLIP_MODES)}")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    n = args.videos or (3 if args.quick else 12)
    width, height, seconds = (640, 360, 7.5) if args.quick else (1280, 720, 9.0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="t2v-bench-ingest-"))
    try:
        src = work / "videos"
        src.mkdir()
        paths = [src / f"v{i:03d}.mp4" for i in range(n)]
        for path in paths:
            texture_video(path, rng, width=width, height=height, fps=24, scenes=3, seconds=seconds)
        frames = sum(av.open(str(p)).streams.video[0].frames for p in paths)
        decode_only(paths[:1])  # warm the page cache and the codec
        timed_ingest(paths[0], work / "out-warm", "rows")  # and what ingest sets up once per process
        modes = [m for m in CLIP_MODES if m in args.modes]
        rounds: dict[str, list[float]] = {name: [] for name in ["decode", *modes]}
        found: dict[str, int] = {}
        for k in range(repeat):
            rounds["decode"].append(decode_only(paths))
            for mode in modes:
                seconds_taken, found[mode] = timed_ingest(src, work / f"out-{mode}-{k}", mode)
                rounds[mode].append(seconds_taken)
        t_decode = float(np.median(rounds["decode"]))
        rows = {mode: {"seconds": float(np.median(rounds[mode])), "clips": found[mode]} for mode in modes}
        clips = next(iter(rows.values()))["clips"]
        decode_rate = clips / t_decode
        table = [("decode-only", t_decode, decode_rate)] + [
            (f"ingest {mode}", r["seconds"], r["clips"] / r["seconds"]) for mode, r in rows.items()
        ]
        print(f"{n} videos {width}x{height}, {frames} frames, {clips} clips, {cores} cores, median of {repeat} rounds")
        print(f"{'':14} {'seconds':>8} {'clips/s':>8} {'clips/s/core':>13} {'vs decode':>10}")
        for name, secs, rate in table:
            print(f"{name:14} {secs:8.2f} {rate:8.2f} {rate / cores:13.3f} {rate / decode_rate:10.0%}")
        result = {
            "benchmark": "ingest",
            "quick": args.quick,
            "videos": n,
            "size": [width, height],
            "frames": frames,
            "clips": clips,
            "cores": cores,
            "rounds": repeat,
            "seconds_per_round": {name: [round(t, 3) for t in times] for name, times in rounds.items()},
            "decode_only_seconds": t_decode,
            "decode_only_clips_per_s_per_core": decode_rate / cores,
            **{f"{mode}_clips_per_s_per_core": r["clips"] / r["seconds"] / cores for mode, r in rows.items()},
            **{f"{mode}_vs_decode_only": r["clips"] / r["seconds"] / decode_rate for mode, r in rows.items()},
            # seconds of footage one core takes through ingest per second: `t2v plan`'s ingest rate
            **{f"{mode}_footage_s_per_core_s": n * seconds / r["seconds"] / cores for mode, r in rows.items()},
            "goal_rows_vs_decode_only": 0.9,
        }
        print(json.dumps(result))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
