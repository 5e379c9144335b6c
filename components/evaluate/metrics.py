"""Video metrics that need no downloaded weights, on uint8 frames (T, H, W, 3).

- temporal_consistency: mean normalised cross-correlation of consecutive grayscale frames, in [-1, 1]; 1 for
  frames that differ only by brightness and contrast, about 0 for independent noise;
- motion: optical-flow magnitude (Farneback) between consecutive frames averaged over every pixel, in pixels per
  frame at the video's size, capped at 320 px on the longer side (the ingest step's motion score);
- flicker: mean absolute change of the mean luminance between consecutive frames, in [0, 1] of the full range;
  an object that moves hardly changes it, a frame that brightens or darkens as a whole does.
Single frames score consistency 1, motion 0 and flicker 0.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from components.common.scores import motion_score, to_analysis_gray


def _gray(video: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in video]).astype(np.float64)


def temporal_consistency(video: np.ndarray) -> float:
    gray = _gray(video)
    if len(gray) < 2:
        return 1.0
    flat = gray.reshape(len(gray), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    scores = []
    for a, b, na, nb in zip(centred[:-1], centred[1:], norms[:-1], norms[1:], strict=True):
        if na < 1e-6 or nb < 1e-6:  # a flat frame: consistent only with another flat frame
            scores.append(1.0 if na < 1e-6 and nb < 1e-6 else 0.0)
        else:
            scores.append(float(a @ b / (na * nb)))
    return float(np.mean(scores))


def motion(video: np.ndarray) -> float:
    gray = [to_analysis_gray(np.ascontiguousarray(f)) for f in video]
    return motion_score(list(itertools.pairwise(gray)))


def flicker(video: np.ndarray) -> float:
    means = _gray(video).mean(axis=(1, 2)) / 255.0
    return float(np.abs(np.diff(means)).mean()) if len(means) > 1 else 0.0


def video_metrics(video: np.ndarray) -> dict[str, float]:
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {video.dtype} {video.shape}")
    return {
        "temporal_consistency": temporal_consistency(video),
        "motion": motion(video),
        "flicker": flicker(video),
    }
