"""Per-clip quality scores on small grayscale frames: pure functions of arrays.

- motion: mean optical-flow magnitude (OpenCV Farneback), in pixels per frame at the analysis size (<= 320 px,
  at most 4 frame pairs per clip);
- sharpness: variance of the Laplacian;
- brightness: mean intensity in [0, 1];
- phash: 64-bit perceptual hash (DCT of a 32x32 thumbnail), for near-duplicate detection by Hamming distance.
"""

from __future__ import annotations

import cv2
import numpy as np


def motion_score(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean Farneback flow magnitude over frame pairs of grayscale uint8 images, in pixels per frame at the
    images' size; 0 for no pairs. The flow is computed at half that size (5x cheaper, same mean within a few
    percent on natural motion) and scaled back."""
    if not pairs:
        return 0.0
    magnitudes = []
    for a, b in pairs:
        h, w = a.shape
        size = (max(8, w // 2), max(8, h // 2))
        a2, b2 = (shrink(x, size) for x in (a, b))
        flow = cv2.calcOpticalFlowFarneback(a2, b2, None, 0.5, 3, 13, 2, 5, 1.1, 0)
        magnitudes.append(float(np.linalg.norm(flow, axis=-1).mean()) * w / size[0])
    return float(np.mean(magnitudes))


def sharpness_score(gray: np.ndarray) -> float:
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def brightness_score(gray: np.ndarray) -> float:
    return float(gray.mean() / 255.0)


def phash(gray: np.ndarray) -> int:
    """64-bit perceptual hash: signs of the lowest 8x8 DCT coefficients against their median."""
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def to_analysis_gray(rgb_or_gray: np.ndarray, max_side: int = 320) -> np.ndarray:
    """Grayscale uint8 with its longer side at most `max_side`."""
    gray = rgb_or_gray if rgb_or_gray.ndim == 2 else cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    scale = max_side / max(h, w)
    if scale < 1:
        gray = shrink(gray, (max(1, round(w * scale)), max(1, round(h * scale))))
    return gray


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` resized down to `size` (width, height) by pixel area, as cv2.INTER_AREA does, in halving steps
    while the size divides evenly (OpenCV's 2x area path is about ten times faster than its 4x one: 1280x720 to
    320x180 takes 0.03 ms instead of 0.3); the result differs from one direct resize by rounding only."""
    w, h = size
    while image.shape[1] % (2 * w) == 0 and image.shape[0] % (2 * h) == 0:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if image.shape[1] != w or image.shape[0] != h:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


# ------------------------------------------------------------------------------------------- selecting by score

# the manifest's score columns and the ingest settings that must be set for ingest to compute them
SCORE_SETTINGS: dict[str, tuple[str, ...]] = {
    "aes": ("aesthetic_model", "aesthetic_head"),
    "ocr": ("ocr_model",),
    "motion": (),
    "sharpness": (),
    "brightness": (),
}


def thresholds(subset: dict, where: str = "subset") -> dict[str, tuple[float | None, float | None]]:
    """{score: (minimum, maximum)} from a subset setting: a number is a minimum ({aes: 5.0}), a mapping a range
    ({ocr: {max: 0.02}}, {motion: {min: 0.5, max: 20}})."""
    out = {}
    for score, value in subset.items():
        if score not in SCORE_SETTINGS:
            raise ValueError(f"{where}: no score {score!r}; the manifest's scores are {sorted(SCORE_SETTINGS)}")
        if isinstance(value, dict) and set(value) <= {"min", "max"} and value:
            low, high = value.get("min"), value.get("max")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            low, high = value, None
        else:
            raise ValueError(f"{where}.{score}={value!r}: give a minimum (5.0) or a range ({{min: 0.5, max: 20}})")
        out[score] = (None if low is None else float(low), None if high is None else float(high))
    return out


def unscored(subset: dict, ingest_settings, where: str = "subset") -> list[str]:
    """What is wrong with selecting on `subset` when ingest runs with `ingest_settings`: one message per score that
    ingest would not compute, naming the settings that make it compute it."""
    found = []
    for score in thresholds(subset, where):
        needed = [name for name in SCORE_SETTINGS[score] if not getattr(ingest_settings, name, None)]
        if needed:
            found.append(
                f"{where} selects on {score!r}, a score ingest computes only with "
                + " and ".join(f"ingest.{n}" for n in needed)
                + " set: name the model(s) in the recipe's ingest section, or drop the threshold"
            )
    return found


def passing(table, subset: dict, where: str = "subset") -> np.ndarray:
    """Which rows of a manifest or precompute index (a DataFrame) meet the thresholds; a row without a score
    (NaN) does not."""
    keep = np.ones(len(table), bool)
    for score, (low, high) in thresholds(subset, where).items():
        if score not in table.columns:
            settings = " and ".join(f"ingest.{n}" for n in SCORE_SETTINGS[score]) or "a newer ingest"
            raise ValueError(
                f"{where} selects on {score!r}, which this data lacks (its columns: {sorted(table.columns)}); "
                f"ingest computes it with {settings}: ingest again with them set, or drop the threshold"
            )
        values = table[score].to_numpy(dtype=float)
        if low is not None:
            keep &= values >= low
        if high is not None:
            keep &= values <= high
    return keep
