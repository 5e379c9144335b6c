"""Which frames of which clips a step encodes: each clip that meets the subset, the bucket it fits and the frame
indices to read, centred in the clip. Read by precompute (its file layout) and by online encoding; no tensors here,
so a task that only lays out or merges the files loads no torch."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from components.common.encoding import EncodingConfig
from components.common.scores import passing
from model.planning.buckets import assign, available_frames


def interval_of(row: dict, cfg: EncodingConfig) -> int:
    if cfg.target_fps and row.get("fps"):
        return max(1, round(float(row["fps"]) / cfg.target_fps))
    return cfg.frame_interval


def plan(manifest: pd.DataFrame, cfg: EncodingConfig) -> pd.DataFrame:
    """One row per clip that meets the subset and fits a bucket: the bucket and the frame indices to read."""
    rows = []
    for row in manifest[passing(manifest, cfg.subset)].to_dict("records"):
        interval = interval_of(row, cfg)
        bucket = assign(
            row["clip_id"],
            int(row["height"]),
            int(row["width"]),
            int(row["num_frames"]),
            cfg.bucket_config,
            interval=interval,
            seed=cfg.seed,
        )
        if bucket is None:
            continue
        spare = available_frames(int(row["num_frames"]), interval) - bucket.num_frames
        first = int(row["start_frame"]) + (spare // 2) * interval  # centred in the clip
        indices = [first + k * interval for k in range(bucket.num_frames)]
        rows.append({**row, **asdict(bucket), "bucket": bucket.key, "frame_indices": indices, "interval": interval})
    return pd.DataFrame(rows)
