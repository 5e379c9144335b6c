"""One source file in, its clips (or the reason it is rejected) out, in a single decode pass.

The decode pass feeds every frame to the scene detector (on a small BGR copy) and keeps small grayscale frames at
a fixed interval (each with its successor, for optical flow) for the clip scores. Timing comes from the decoded
frames' timestamps in display order (`components.ingest.timing`), not from the container header: where the two
disagree, decoding wins. Frames are counted in display order; a clip records the decoder's timestamp of its first
frame (`seek_time`), by which readers find it again. Sizes and scores are those of the displayed picture (a phone
video's rotation applied). `analyze_later` splits the work at the end of the decode pass: the clips' scores need
nothing from the file, so ingest computes them on a second thread while the next file decodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from components.common.scores import (
    brightness_score,
    motion_score,
    phash,
    sharpness_score,
    shrink,
    to_analysis_gray,
)
from components.common.settings import setting
from components.common.video import rotation, upright
from components.ingest.scenes import AdaptiveCuts, ContentCuts, plane, scene_spans, split_scene
from components.ingest.timing import lost_frames, sampling_stride, timing

# Part of every cache key: bump it when a change to the analysis changes its results, so caches recompute.
ANALYSIS_VERSION = 6
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DETECTOR_WIDTH = 96  # scene detection runs on frames whose longer side is at most this (components.ingest.scenes)
ANALYSIS_SIDE = 320  # scores run on grayscale frames whose longer side is at most this
PLUGIN_SIDE = 640  # model-based scorers get RGB frames whose longer side is at most this
PROBE_FRAMES = 16  # the first frames' timestamps set the sampling stride (not the header's rate: containers differ)


class Rejected(Exception):
    """A source that cannot be used; `reason` is a short code, the message says why and what to do."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AnalysisConfig:
    """How each file is cut into clips and scored."""

    min_seconds: float = setting(2.0, "shortest clip; shorter scenes are dropped")
    max_seconds: float = setting(15.0, "longest clip; longer scenes are cut into consecutive clips")
    detector: str = setting("content", "scene detector: content (fast) or adaptive")
    scene_threshold: float = setting(27.0, "scene detector threshold (content: 27, adaptive: 3)")
    min_scene_frames: int = setting(15, "shortest scene the detector reports, in frames")
    score_interval: float = setting(0.5, "seconds between frames kept for scoring")
    max_score_pairs: int = setting(4, "frame pairs per clip for the motion score")
    max_pixels: int = setting(4096 * 2304, "larger frames are quarantined")
    max_duration: float = setting(3 * 3600.0, "longer files are quarantined (seconds)")
    min_decoded_share: float = setting(0.9, "a file that decodes less of the duration its header promises is truncated")
    min_fps: float = setting(1.0, "a lower frame rate (from decoded timestamps) marks broken timing")
    min_frame_share: float = setting(
        0.5,
        "a file that decodes fewer frames than this share both of those its header counts and of those its "
        "timestamps' shortest step implies over its length has lost frames: quarantined (see keep_partial)",
    )
    keep_partial: bool = setting(False, "keep a file that has lost frames; its clips' `note` says how many")


EIGHT_BIT_LUMA = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray")


@dataclass
class Clip:
    index: int
    start_frame: int
    end_frame: int  # exclusive
    start_s: float
    end_s: float
    seek_time: float | None  # the decoder's timestamp of the first frame (None: count frames from the file's start)
    motion: float
    sharpness: float
    brightness: float
    phash: str
    extra: dict[str, float] = field(default_factory=dict)  # scores of optional model-based scorers


@dataclass
class SourceInfo:
    kind: str  # "video" or "image"
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    timing: str = "timestamps"  # "timestamps" (decoded, display order) or "header" (timestamps unusable)
    vfr: bool = False  # variable frame rate: fps is the mean rate
    rotation: int = 0  # degrees counter-clockwise the picture is turned for display (width, height are displayed)
    header_fps: float | None = None
    header_frames: int | None = None
    header_duration: float | None = None
    note: str = ""  # what is wrong with a file kept all the same (keep_partial)
    cuts: list[int] = field(default_factory=list)
    clips: list[Clip] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # scenes too short to make a clip


def analyze(src: str | BinaryIO, name: str, cfg: AnalysisConfig, scorers: tuple = ()) -> SourceInfo:
    """Analyze the image or video at `src` (a path or an open binary file); `name` decides image vs video.
    `scorers` are optional model-based clip scorers (see `components.ingest.plugins`)."""
    return analyze_later(src, name, cfg, scorers)()


def analyze_later(src: str | BinaryIO, name: str, cfg: AnalysisConfig, scorers: tuple = ()) -> Callable[[], SourceInfo]:
    """`analyze` in two parts: the decode pass (and any rejection) now, the clips' scores when the returned function
    is called. The second part needs nothing from `src`, so it can run on another thread while the next file
    decodes."""
    if name.lower().endswith(IMAGE_SUFFIXES):
        info = analyze_image(src, cfg, scorers)
        return lambda: info
    return _decode_video(src, cfg, scorers).finish


def analyze_image(src: str | BinaryIO, cfg: AnalysisConfig, scorers: tuple = ()) -> SourceInfo:
    try:
        with Image.open(src) as image:
            image.load()
            rgb = np.asarray(image.convert("RGB"))
            codec = (image.format or "image").lower()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise Rejected("unreadable", f"not a readable image ({err}); re-export it as PNG or JPEG") from err
    h, w = rgb.shape[:2]
    _check_pixels(w, h, cfg)
    gray = to_analysis_gray(rgb, ANALYSIS_SIDE)
    clip = Clip(0, 0, 1, 0.0, 0.0, None, 0.0, sharpness_score(gray), brightness_score(gray), f"{phash(gray):016x}")
    if scorers:
        small = shrink(rgb, _fit(w, h, PLUGIN_SIDE))
        clip.extra = {s.column: s([small]) for s in scorers}
    return SourceInfo("image", codec, w, h, 0.0, 1, 0.0, clips=[clip])


def _fit(w: int, h: int, side: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is at most `side`, both even."""
    scale = min(1.0, side / max(w, h))
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)


def _small_gray(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """Small grayscale (luma) copy for the scores."""
    if frame.format.name in EIGHT_BIT_LUMA:
        return shrink(plane(frame, 0, frame.width, frame.height), size)
    return frame.reformat(*size, format="gray", interpolation="AREA").to_ndarray()


def _check_pixels(w: int, h: int, cfg: AnalysisConfig) -> None:
    if w * h > cfg.max_pixels:
        raise Rejected(
            "over_limit",
            f"{w}x{h} = {w * h} pixels exceeds max_pixels={cfg.max_pixels}; downscale it or raise the limit",
        )


def _detector(cfg: AnalysisConfig, size: tuple[int, int], fps: float) -> ContentCuts | AdaptiveCuts:
    """The scene detector, on frames scaled to `size`; `fps` is the adaptive detector's frame rate."""
    if cfg.detector == "content":
        return ContentCuts(cfg.scene_threshold, cfg.min_scene_frames, size)
    if cfg.detector == "adaptive":
        return AdaptiveCuts(cfg.scene_threshold, cfg.min_scene_frames, size, fps)
    raise ValueError(f"detector={cfg.detector!r} must be 'content' or 'adaptive'")


class _Sampler:
    """The frames a decode pass keeps for scoring: pairs (for optical flow) about every `interval` seconds, small
    and grayscale, and RGB ones for model-based scorers. The stride is set from the first frames' timestamps
    (`sampling_stride`), so those are held until it is known."""

    def __init__(self, interval: float, header_fps, gray_size, rgb_size, scorers: tuple):
        self.interval, self.header_fps, self.gray_size, self.rgb_size = interval, header_fps, gray_size, rgb_size
        self.scorers, self.stride, self.turned = scorers, 0, 0
        self.samples: dict[int, np.ndarray] = {}  # frame index -> small grayscale frame
        self.rgb: dict[int, np.ndarray] = {}
        self.held: list[tuple[int, av.VideoFrame]] = []

    def push(self, index: int, frame: av.VideoFrame, raw: list[float | None]) -> None:
        if not self.stride:
            self.held.append((index, frame))
            if len(self.held) == PROBE_FRAMES:
                self.finish(raw)
            return
        if index % self.stride in (0, 1):
            self.samples[index] = upright(_small_gray(frame, self.gray_size), self.turned)
        if self.scorers and index % self.stride == 0:
            self.rgb[index] = upright(frame.reformat(*self.rgb_size, format="rgb24").to_ndarray(), self.turned)

    def finish(self, raw: list[float | None]) -> None:
        """Set the stride (at the latest when decoding ends) and sample the frames held until then."""
        if not self.stride:
            self.stride = sampling_stride(raw, self.header_fps, self.interval)
            held, self.held = self.held, []
            for index, frame in held:
                self.push(index, frame, raw)


@dataclass
class _Decoded:
    """What the decode pass of a video leaves for scoring its clips."""

    info: SourceInfo
    times: np.ndarray
    ends: np.ndarray
    seek_times: list[float | None]
    samples: dict[int, np.ndarray]
    rgb_samples: dict[int, np.ndarray]
    cfg: AnalysisConfig
    scorers: tuple

    def finish(self) -> SourceInfo:
        """The source with its clips (scored) and the scenes too short to make one."""
        info, cfg = self.info, self.cfg
        for start, end in scene_spans(info.cuts, info.num_frames):
            for a, b, usable in split_scene(start, end, self.times, self.ends, cfg):
                if usable:
                    times = (self.times, self.ends)
                    clip = _score_clip(len(info.clips), a, b, times, self.seek_times[a], self.samples, cfg)
                    if self.scorers:
                        clip.extra = _plugin_scores(self.scorers, self.rgb_samples, a, b)
                    info.clips.append(clip)
                else:
                    reason = f"shorter than {cfg.min_seconds} s"
                    info.dropped.append({"start_frame": a, "end_frame": b, "reason": reason})
        return info


def _decode_video(src: str | BinaryIO, cfg: AnalysisConfig, scorers: tuple = ()) -> _Decoded:
    try:
        container = av.open(src, "r")
    except av.error.FFmpegError as err:
        if not _looks_like_video(_head(src)):
            raise Rejected(
                "not_video", f"not a video or image file ({err.strerror}); remove it from the inputs"
            ) from err
        raise Rejected(
            "truncated", f"a video container without a readable index ({err.strerror}); copy it again from its source"
        ) from err
    with container:
        if not container.streams.video:
            if container.streams.audio:
                raise Rejected("audio_only", "has audio but no video stream; nothing to train on")
            raise Rejected("not_video", "has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        w, h = stream.codec_context.width, stream.codec_context.height
        if not w or not h:
            raise Rejected("unreadable", "video stream has no frame size; the file is damaged")
        _check_pixels(w, h, cfg)
        header_fps = float(stream.average_rate) if stream.average_rate else None
        header_frames = stream.frames or None
        # the header's duration is only reported: a file is judged by what decodes (headers can be wrong)
        header_duration = float(container.duration / av.time_base) if container.duration else None
        codec = stream.codec_context.name

        detector = _detector(cfg, _fit(w, h, DETECTOR_WIDTH), header_fps or 25.0)
        raw: list[float | None] = []  # decoder timestamps, in display order
        sampler = _Sampler(cfg.score_interval, header_fps, _fit(w, h, ANALYSIS_SIDE), _fit(w, h, PLUGIN_SIDE), scorers)
        cuts: list[int] = []
        decode_error = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                raw.append(frame.time)
                if index == 0:
                    sampler.turned = rotation(frame)
                cuts += detector.push(index, frame)
                sampler.push(index, frame, raw)
                if frame.time is not None and raw[0] is not None and frame.time - raw[0] > cfg.max_duration:
                    raise Rejected(
                        "over_limit",
                        f"decodes past max_duration={cfg.max_duration:.0f} s (its header says "
                        f"{header_duration or 0:.0f} s); split it first",
                    )
        except av.error.FFmpegError as err:
            decode_error = str(err)
        sampler.finish(raw)
        turned = sampler.turned
        n = len(raw)
        if n:
            cuts += detector.finish(n)
        tick = float(stream.time_base) if stream.time_base else 0.0

    if n == 0:
        raise Rejected("unreadable", f"no frame decodes ({decode_error or 'empty stream'}); the file is damaged")
    clock = timing(raw, header_fps, tick, header_frames, header_duration)
    if clock is None or clock.fps < cfg.min_fps:
        raise Rejected(
            "zero_fps",
            f"its frames carry no usable timing (frame rate {clock.fps if clock else 0:.3g}, below "
            f"min_fps={cfg.min_fps}: zero durations or time scale); re-mux it with a valid frame rate",
        )
    # the header's promise in seconds (frame counts alone mislead: AVI counts B-frame video in half-frame ticks)
    promised = header_frames / header_fps if header_frames and header_fps else None
    if decode_error or (promised and clock.duration < cfg.min_decoded_share * promised):
        raise Rejected(
            "truncated",
            f"decoding stopped after {n} frames, {clock.duration:.2f} s of the {promised or 0:.2f} s its header "
            f"promises ({decode_error or 'premature end'}); the file is incomplete: copy it again from its source",
        )
    lost = lost_frames(n, clock.times, header_frames, tick, cfg.min_frame_share)
    if lost and not cfg.keep_partial:
        raise Rejected("lost_frames", f"{lost}: copy it again from its source, or set analysis.keep_partial")
    level = turned % 180 == 0
    info = SourceInfo(
        "video",
        codec,
        w if level else h,
        h if level else w,
        round(clock.fps, 4),
        n,
        clock.duration,
        timing=clock.source,
        vfr=clock.vfr,
        rotation=turned,
        header_fps=header_fps,
        header_frames=header_frames,
        header_duration=header_duration,
        note=lost or "",
        cuts=sorted(set(cuts)),
    )
    seek_times = raw if clock.source == "timestamps" else [None] * n
    return _Decoded(info, clock.times, clock.ends, seek_times, sampler.samples, sampler.rgb, cfg, scorers)


def _head(src: str | BinaryIO, size: int = 192) -> bytes:
    if isinstance(src, str):
        with open(src, "rb") as f:
            return f.read(size)
    src.seek(0)
    head = src.read(size)
    src.seek(0)
    return head


def _looks_like_video(head: bytes) -> bool:
    """Container signatures: ISO-BMFF (mp4/mov), Matroska/WebM, AVI, MPEG-TS/PS, FLV, GIF."""
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
        or head.startswith((b"\x1aE\xdf\xa3", b"RIFF", b"FLV", b"GIF8", b"\x00\x00\x01\xba"))
        or (len(head) > 188 and head[0] == head[188] == 0x47)  # MPEG-TS sync bytes
    )


def _plugin_scores(scorers: tuple, rgb_samples: dict[int, np.ndarray], start: int, end: int) -> dict[str, float]:
    """Each scorer on the first, middle and last RGB frames kept inside the clip (Open-Sora's choice)."""
    inside = sorted(i for i in rgb_samples if start <= i < end) or [min(rgb_samples, key=lambda i: abs(i - start))]
    picks = sorted({inside[0], inside[len(inside) // 2], inside[-1]})
    frames = [rgb_samples[i] for i in picks]
    return {s.column: s(frames) for s in scorers}


def _score_clip(
    index: int, start: int, end: int, times: tuple, seek_time: float | None, samples: dict[int, np.ndarray], cfg
) -> Clip:
    """Scores of frames [start, end); `times` is (start times, end times) of every frame."""
    inside = sorted(i for i in samples if start <= i < end)
    pairs_at = [i for i in inside if i + 1 in samples and i + 1 < end]
    if len(pairs_at) > cfg.max_score_pairs:
        pick = np.linspace(0, len(pairs_at) - 1, cfg.max_score_pairs).round().astype(int)
        pairs_at = [pairs_at[k] for k in pick]
    pairs = [(samples[i], samples[i + 1]) for i in pairs_at]
    frames = [samples[i] for i in inside] or [samples[min(samples, key=lambda i: abs(i - start))]]
    middle = frames[len(frames) // 2]
    return Clip(
        index=index,
        start_frame=start,
        end_frame=end,
        start_s=float(times[0][start]),
        end_s=float(times[1][end - 1]),
        seek_time=seek_time,
        motion=motion_score(pairs),
        sharpness=float(np.mean([sharpness_score(f) for f in frames])),
        brightness=float(np.mean([brightness_score(f) for f in frames])),
        phash=f"{phash(middle):016x}",
    )
