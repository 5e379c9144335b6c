"""Buckets by (resolution, frames, aspect ratio) in Open-Sora's bucket_config form, and resize-crop to a bucket.

    bucket_config = {resolution: {num_frames: (probability, batch_size)}}
    e.g. {"144p": {1: (1.0, 64), 51: (1.0, 8)}, "256": {16: (0.5, 4)}}

A resolution name is an area: "144p", "240p", "360p", "480p", "720p", "1080p" (Open-Sora's 16:9 pixel counts)
or a side for squares ("64", "256", "512", "1024"). A probability may be a pair (p_resolution, p_frames).
A clip goes to the largest resolution its area reaches and then to the longest frame count it can fill (after
frame sampling), each accepted with its probability (a deterministic draw per clip); an image (1 frame) goes to
frame count 1. Within a resolution, the bucket's height and width follow the clip's aspect ratio, from a fixed
set, rounded to multiples of 16 (8x VAE times patch 2).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

NAMED_AREAS = {
    "144p": 144 * 256,
    "240p": 240 * 426,
    "360p": 360 * 640,
    "480p": 480 * 854,
    "720p": 720 * 1280,
    "1080p": 1080 * 1920,
}
DEFAULT_BUCKETS = {"256": {1: (1.0, 32), 16: (1.0, 4)}}  # precompute's and training's default bucket_config
ASPECT_RATIOS = (9 / 21, 9 / 16, 3 / 4, 1.0, 4 / 3, 16 / 9)  # height / width
MULTIPLE = 16


@dataclass(frozen=True)
class Bucket:
    resolution: str
    num_frames: int
    height: int
    width: int
    batch_size: int

    @property
    def key(self) -> str:
        return f"{self.resolution}-{self.num_frames}f-{self.height}x{self.width}"


def resolution_area(name: str) -> int:
    if name in NAMED_AREAS:
        return NAMED_AREAS[name]
    if name.isdigit():
        return int(name) ** 2
    raise ValueError(f"unknown resolution {name!r}: use one of {sorted(NAMED_AREAS)} or a square side like '256'")


def smallest_area(bucket_config: dict) -> int:
    """The pixels of a frame of the smallest resolution in `bucket_config`: the least a clip's frames must hold to
    reach any of its buckets without being upscaled."""
    return min(resolution_area(str(res)) for res in validate(bucket_config))


def bucket_size(area: int, aspect_ratio: float) -> tuple[int, int]:
    """(height, width) of about `area` pixels at the listed aspect ratio nearest `aspect_ratio` (h / w)."""
    ratio = min(ASPECT_RATIOS, key=lambda r: abs(math.log(r / aspect_ratio)))
    height = max(MULTIPLE, round(math.sqrt(area * ratio) / MULTIPLE) * MULTIPLE)
    width = max(MULTIPLE, round(math.sqrt(area / ratio) / MULTIPLE) * MULTIPLE)
    return height, width


def _probabilities(value) -> tuple[float, float, int]:
    prob, batch = value
    p_res, p_time = prob if isinstance(prob, (tuple, list)) else (prob, 1.0)
    return float(p_res), float(p_time), int(batch)


def _draw(seed: int, clip_id: str, what: str) -> float:
    digest = hashlib.sha256(f"{seed}:{clip_id}:{what}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15


def validate(bucket_config: dict) -> dict[str, dict[int, tuple]]:
    """The config with integer frame counts; errors name the bad entry."""
    out: dict[str, dict[int, tuple]] = {}
    for res, frames in bucket_config.items():
        resolution_area(str(res))
        out[str(res)] = {}
        for t, value in frames.items():
            try:
                p_res, p_time, batch = _probabilities(value)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"bucket_config[{res!r}][{t}] = {value!r}: expected (probability, batch_size)"
                ) from err
            if int(t) < 1 or batch < 1 or not (0 <= p_res <= 1 and 0 <= p_time <= 1):
                raise ValueError(f"bucket_config[{res!r}][{t}] = {value!r}: frames >= 1, batch >= 1, p in [0, 1]")
            out[str(res)][int(t)] = value
    if not out:
        raise ValueError("bucket_config is empty")
    return out


def latent_frames(num_frames: int, temporal_compression: int) -> int:
    """Latent frames of a video through a VAE that compresses time by `temporal_compression`: a causal video VAE
    keeps the first frame and compresses the rest, (n - 1) // t + 1; an image VAE (t = 1) keeps them all."""
    return (num_frames - 1) // temporal_compression + 1 if temporal_compression > 1 else num_frames


def available_frames(num_frames: int, interval: int) -> int:
    return (num_frames - 1) // interval + 1 if num_frames > 0 else 0


def assign(
    clip_id: str, height: int, width: int, num_frames: int, bucket_config: dict, *, interval: int = 1, seed: int = 0
) -> Bucket | None:
    """The bucket of one clip, or None when it fits none (too small, too short, or not drawn)."""
    config = validate(bucket_config)
    area = height * width
    usable = available_frames(num_frames, interval)
    for res in sorted(config, key=resolution_area, reverse=True):
        if area < resolution_area(res):
            continue
        p_res = max(_probabilities(v)[0] for v in config[res].values())
        if _draw(seed, clip_id, f"res:{res}") >= p_res:
            continue
        for t in sorted(config[res], reverse=True):
            if (num_frames == 1) != (t == 1) or usable < t:
                continue
            p_res_t, p_time, batch = _probabilities(config[res][t])
            if _draw(seed, clip_id, f"res:{res}") < p_res_t and _draw(seed, clip_id, f"time:{res}:{t}") < p_time:
                h, w = bucket_size(resolution_area(res), height / width)
                return Bucket(res, t, h, w, batch)
    return None


def resize_crop(frame, height: int, width: int):
    """Scale an RGB frame (H, W, 3) so it covers (height, width), then crop the centre."""
    import cv2

    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top : top + height, left : left + width]
