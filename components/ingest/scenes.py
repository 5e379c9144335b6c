"""Scene cuts, found frame by frame during the decode pass.

The content detector scores each frame by how much its colour changed since the frame before: the mean absolute
difference of hue, saturation and value (8-bit HSV) between the two frames' small copies, averaged over the three
channels. That is PySceneDetect's ContentDetector score with its default weights, so `scene_threshold` means the
same, and a frame scoring at or above it is a cut, subject to the same minimum scene length (`MinSceneLength`).
The score is a mean over pixels and the resizing (bilinear) samples pixels rather than averaging detail away, so
the score barely depends on the copies' size and they can be small: media's DETECTOR_WIDTH of 96 pixels divides
1080p and 2160p frames by an even factor (20, 40), where each small pixel is the mean of 2x2 source pixels rather
than one of them.

Per frame the work stays small beside decoding: a 4:2:0 frame's planes are resized straight from the decoder's
buffers into buffers reused from frame to frame and converted once at the small size, the score is one OpenCV
call, and the minimum scene length is kept with frame numbers (no timecode objects).

The adaptive detector is PySceneDetect's AdaptiveDetector, on the same small copies. Between the cuts lie the
scenes (`scene_spans`), each cut into clips of at most max_seconds (`split_scene`).
"""

from __future__ import annotations

import itertools

import av
import cv2
import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import AdaptiveDetector

NO_CUTS: tuple[int, ...] = ()  # what a frame that ends no scene returns (shared: no object per frame)


def plane(frame: av.VideoFrame, i: int, w: int, h: int) -> np.ndarray:
    """Plane `i` of `frame` as an (h, w) uint8 view of the decoder's buffer."""
    return _view(frame.planes[i], w, h)


def _view(buffer: av.video.plane.VideoPlane, w: int, h: int) -> np.ndarray:
    return np.frombuffer(buffer, np.uint8).reshape(h, buffer.line_size)[:, :w]  # rows padded to the line size


class SmallFrames:
    """Small BGR copies of decoded frames at `size` (width, height, both even). A 4:2:0 frame is resized plane by
    plane (luma and chroma, then one colour conversion at the small size) into a buffer that the next frame
    overwrites; other pixel formats (and odd sizes) go through the decoder's scaler."""

    def __init__(self, size: tuple[int, int]):
        w, h = size
        self.size = size
        self._i420 = np.empty((h * 3 // 2, w), np.uint8)
        flat = self._i420.reshape(-1)
        luma, chroma = w * h, w * h // 4
        self._planes = (
            flat[:luma].reshape(h, w),
            flat[luma : luma + chroma].reshape(h // 2, w // 2),
            flat[luma + chroma :].reshape(h // 2, w // 2),
        )
        self._bgr = np.empty((h, w, 3), np.uint8)

    def bgr(self, frame: av.VideoFrame) -> np.ndarray:
        (w, h), fw, fh = self.size, frame.width, frame.height
        if frame.format.name not in ("yuv420p", "yuvj420p") or fw % 2 or fh % 2:
            return frame.reformat(w, h, format="bgr24", interpolation="FAST_BILINEAR").to_ndarray()
        (y, u, v), (fy, fu, fv) = self._planes, frame.planes
        cv2.resize(_view(fy, fw, fh), (w, h), dst=y, interpolation=cv2.INTER_LINEAR)
        cv2.resize(_view(fu, fw // 2, fh // 2), (w // 2, h // 2), dst=u, interpolation=cv2.INTER_LINEAR)
        cv2.resize(_view(fv, fw // 2, fh // 2), (w // 2, h // 2), dst=v, interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(self._i420, cv2.COLOR_YUV2BGR_I420, dst=self._bgr)


class MinSceneLength:
    """The minimum scene length in frames, applied as PySceneDetect's flash filter does in its merge mode. Called
    with each frame's number and whether its score is at or above the threshold, it returns the cuts found.

    A frame above the threshold is a cut when at least `length` frames have passed since the last frame above it
    (or since the first frame). One that comes sooner is ignored before the first cut; after it, it starts a merge:
    frames above the threshold in quick succession (a flash, fast motion) become one cut at the last of them, found
    once a frame below the threshold comes `length` frames after that last one and the merged frames span at least
    `length` frames. A merge still open at the end of the video gives no cut."""

    def __init__(self, length: int):
        self.length = length
        self._last_above: int | None = None
        self._seen_cut = False
        self._merge_from: int | None = None

    def __call__(self, index: int, above: bool) -> tuple[int, ...]:
        if self.length <= 0:
            return (index,) if above else NO_CUTS
        if self._last_above is None:
            self._last_above = index
        long_enough = index - self._last_above >= self.length
        if above:
            self._last_above = index
        if self._merge_from is not None:
            if long_enough and not above and self._last_above - self._merge_from >= self.length:
                self._merge_from = None
                return (self._last_above,)
            return NO_CUTS
        if not above:
            return NO_CUTS
        if long_enough:
            self._seen_cut = True
            return (index,)
        if self._seen_cut:
            self._merge_from = index
        return NO_CUTS


class ContentCuts:
    """Content detector (see the module docstring): `push` each decoded frame in order, then `finish`."""

    def __init__(self, threshold: float, min_scene_frames: int, size: tuple[int, int]):
        w, h = size
        self.threshold = threshold
        self._small = SmallFrames(size)
        self._hsv = np.empty((h, w, 3), np.uint8)
        self._previous = np.empty((h, w, 3), np.uint8)
        self._values = 3 * w * h
        self._first = True
        self._filter = MinSceneLength(min_scene_frames)

    def score(self, frame: av.VideoFrame) -> float:
        """The frame's content score against the previous frame pushed (0 for the first)."""
        self._hsv, self._previous = self._previous, self._hsv
        cv2.cvtColor(self._small.bgr(frame), cv2.COLOR_BGR2HSV, dst=self._hsv)
        if self._first:
            self._first = False
            return 0.0
        return cv2.norm(self._hsv, self._previous, cv2.NORM_L1) / self._values

    def push(self, index: int, frame: av.VideoFrame) -> tuple[int, ...]:
        """The cuts known after frame `index` (its display-order number), usually none."""
        return self._filter(index, self.score(frame) >= self.threshold)

    def finish(self, frames: int) -> tuple[int, ...]:
        return NO_CUTS


class AdaptiveCuts:
    """PySceneDetect's AdaptiveDetector behind the same `push` and `finish` as ContentCuts."""

    def __init__(self, threshold: float, min_scene_frames: int, size: tuple[int, int], fps: float):
        self._detector = AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_scene_frames)
        self._small = SmallFrames(size)
        self._fps = fps

    def push(self, index: int, frame: av.VideoFrame) -> tuple[int, ...]:
        found = self._detector.process_frame(FrameTimecode(index, self._fps), self._small.bgr(frame))
        return tuple(c.frame_num for c in found) if found else NO_CUTS

    def finish(self, frames: int) -> tuple[int, ...]:
        return tuple(c.frame_num for c in self._detector.post_process(FrameTimecode(frames - 1, self._fps)))


def scene_spans(cuts: list[int], n: int) -> list[tuple[int, int]]:
    """The scenes of `n` frames between the cuts, as (start, end) frame ranges."""
    bounds = [0, *[c for c in cuts if 0 < c < n], n]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def split_scene(start: int, end: int, times: np.ndarray, ends: np.ndarray, cfg) -> list[tuple[int, int, bool]]:
    """Consecutive (start, end, usable) pieces of a scene, each the most frames that show within max_seconds; a
    piece shorter than min_seconds (a short scene, or the rest of a long one) is not usable."""
    pieces = []
    a = start
    while a < end:
        b = min(end, max(a + 1, int(np.searchsorted(ends, times[a] + cfg.max_seconds + 1e-6, side="right"))))
        pieces.append((a, b, ends[b - 1] - times[a] >= cfg.min_seconds - 1e-6))
        a = b
    return pieces
