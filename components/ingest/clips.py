"""Writing clips out as files: stream copy from the keyframe at or before the start, or a frame-exact re-encode."""

from __future__ import annotations

import itertools
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import av
import pandas as pd
from tqdm.auto import tqdm

from components.common.files import atomic_path
from components.common.video import iter_frames, write_video


def copy_clip(src: str, dst: Path, start_s: float, end_s: float) -> tuple[float, float, int]:
    """Remux the packets from the keyframe at or before `start_s` up to `end_s`; no decoding, no quality loss.
    Returns the clip's actual (start_s, end_s, frames)."""
    with av.open(src) as inp:
        vin = inp.streams.video[0]
        tb = float(vin.time_base)
        start_pts = (vin.start_time or 0) + int(start_s / tb)
        inp.seek(start_pts, stream=vin, backward=True, any_frame=False)
        with atomic_path(dst) as tmp, av.open(str(tmp), "w") as out:
            vout = out.add_stream_from_template(vin)
            offset = first_pts = last_pts = None
            frames = 0
            for packet in inp.demux(vin):
                if packet.pts is None or packet.dts is None:
                    continue
                if packet.is_keyframe and first_pts is not None and (packet.pts - vin.start_time) * tb >= end_s:
                    break
                if (packet.pts - (vin.start_time or 0)) * tb >= end_s and first_pts is not None:
                    continue  # a frame past the end that arrives in decode order before the next keyframe
                if offset is None:
                    offset, first_pts = packet.dts, packet.pts
                last_pts = packet.pts if last_pts is None else max(last_pts, packet.pts)
                duration = packet.duration or 0
                packet.pts -= offset
                packet.dts -= offset
                packet.stream = vout
                out.mux(packet)
                frames += 1
            if first_pts is None:
                raise ValueError(f"no packets between {start_s:.3f} s and {end_s:.3f} s in {src}")
    base = vin.start_time or 0
    return (first_pts - base) * tb, (last_pts + duration - base) * tb, frames


def reencode_clip(src: str, dst: Path, row: dict) -> tuple[float, float, int]:
    """Decode exactly the clip's frames [start_frame, end_frame) (counted in display order, upright) and encode them
    to H.264 at the clip's rate."""
    start, end = int(row["start_frame"]), int(row["end_frame"])
    frames = iter_frames(src, start, row.get("seek_time"))
    clip = (frame for index, frame in itertools.takewhile(lambda item: item[0] < end, frames))
    count = 0

    def counted():
        nonlocal count
        for frame in clip:
            count += 1
            yield frame

    write_video(dst, counted(), float(row["fps"]))
    frames.close()
    return float(row["start_s"]), float(row["start_s"]) + count / float(row["fps"]), count


def _write_one(args: tuple) -> tuple[float, float, int]:
    mode, src, dst, row = args
    if mode == "copy":
        return copy_clip(src, Path(dst), row["start_s"], row["end_s"])
    return reencode_clip(src, Path(dst), row)


def write_clips(manifest: pd.DataFrame, clip_dir: Path, mode: str, *, workers: int = 1, progress: bool = True):
    """Write each video clip of `manifest` to `clip_dir` (mode 'copy' or 'reencode'); images keep their path.
    Returns the manifest with `path`, times and frame counts of the written files."""
    clip_dir.mkdir(parents=True, exist_ok=True)
    manifest = manifest.copy()
    videos = manifest.index[manifest["kind"] == "video"]
    columns = ("start_frame", "end_frame", "seek_time", "start_s", "end_s", "fps")
    jobs = [
        (
            mode,
            manifest.at[i, "source"],
            str(clip_dir / f"{manifest.at[i, 'clip_id']}.mp4"),
            {c: manifest.at[i, c] for c in columns},
        )
        for i in videos
    ]
    bar = tqdm(total=len(jobs), desc=f"clips ({mode})", unit="clip", disable=not progress)
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(_write_one(job))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = []
            for r in pool.map(_write_one, jobs):
                results.append(r)
                bar.update()
    bar.close()
    for i, job, (start_s, end_s, frames) in zip(videos, jobs, results, strict=True):
        manifest.at[i, "path"] = job[2]
        manifest.at[i, "start_s"], manifest.at[i, "end_s"], manifest.at[i, "num_frames"] = start_s, end_s, frames
    return manifest
