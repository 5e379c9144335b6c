"""Precompute: a captioned manifest in, VAE latents and text embeddings out, once, for every training run.

    manifest -> each clip's bucket (fixed here) -> frames at the sampling interval, centred in the clip,
             -> resize-crop to the bucket -> VAE latents; captions -> T5 embeddings
             -> <out_root>/<key>/shard-NNNNN.safetensors (per clip: "<clip_id>.latent", "<clip_id>.text")
                and index.parquet (clip, split, bucket, shapes, shard), meta.json

<key> hashes what the result depends on (the manifest's content, the encoders, the buckets, the frame sampling,
the seed): a second run with the same inputs reuses the folder; any change makes a new one. The folder appears
only when complete (built beside it, then renamed); `<out_root>/LATEST` names the last one written or reused, so
training can be pointed at the root.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from components.common.video import read_frames
from components.precompute.buckets import assign, available_frames, resize_crop, validate
from components.precompute.encoders import TextEncoder, describe, load_vae

PRECOMPUTE_VERSION = 1
DEFAULT_BUCKETS = {"256": {1: (1.0, 32), 16: (1.0, 4)}}


@dataclass(frozen=True)
class PrecomputeConfig:
    manifest: str = "data/caption/manifest.parquet"
    out_root: str = "data/precompute"
    vae: str = "stabilityai/sd-vae-ft-ema"
    text_encoder: str = "DeepFloyd/t5-v1_1-xxl"
    max_text_tokens: int = 300
    bucket_config: dict = field(default_factory=lambda: DEFAULT_BUCKETS)
    frame_interval: int = 1
    target_fps: float | None = None  # when set, the interval is round(fps / target_fps) per clip
    seed: int = 0
    shard_size: int = 256
    batch_size: int = 8
    storage_dtype: str = "float32"  # or bfloat16 / float16, to halve the disk
    device: str | None = None
    progress: bool = True


@dataclass
class PrecomputeResult:
    out_dir: Path
    key: str
    reused: bool
    samples: int
    skipped: int  # clips that fit no bucket
    index: pd.DataFrame


def _manifest_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_key(cfg: PrecomputeConfig, manifest_hash: str) -> str:
    what = {
        "version": PRECOMPUTE_VERSION,
        "manifest": manifest_hash,
        "vae": cfg.vae,
        "text_encoder": cfg.text_encoder,
        "max_text_tokens": cfg.max_text_tokens,
        "buckets": {str(r): {str(t): v for t, v in f.items()} for r, f in cfg.bucket_config.items()},
        "frame_interval": cfg.frame_interval,
        "target_fps": cfg.target_fps,
        "seed": cfg.seed,
        "storage_dtype": cfg.storage_dtype,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def interval_of(row: dict, cfg: PrecomputeConfig) -> int:
    if cfg.target_fps and row.get("fps"):
        return max(1, round(float(row["fps"]) / cfg.target_fps))
    return cfg.frame_interval


def plan(manifest: pd.DataFrame, cfg: PrecomputeConfig) -> pd.DataFrame:
    """One row per clip that fits a bucket: the bucket and the frame indices to read."""
    rows = []
    for row in manifest.to_dict("records"):
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


def clip_video(row: dict) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1]: the planned frames, resized and centre-cropped to the bucket."""
    frames = read_frames(
        row["source"], list(row["frame_indices"]), float(row["fps"] or 1.0), image=row["kind"] == "image"
    )
    frames = [resize_crop(f, int(row["height"]), int(row["width"])) for f in frames]
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float()  # (3, T, H, W)
    return video / 127.5 - 1.0


def precompute(cfg: PrecomputeConfig) -> PrecomputeResult:
    """Encode the manifest's clips and captions into `<out_root>/<key>/` (or reuse it when it exists)."""
    manifest_path = Path(cfg.manifest)
    if not manifest_path.exists():
        raise ValueError(f"manifest {manifest_path} not found; run `t2v caption` (or `t2v ingest`) first")
    validate(cfg.bucket_config)
    if cfg.frame_interval < 1:
        raise ValueError(f"frame_interval={cfg.frame_interval} must be >= 1")
    manifest_hash = _manifest_hash(manifest_path)
    key = cache_key(cfg, manifest_hash)
    out = Path(cfg.out_root) / key
    if (out / "index.parquet").exists():
        (Path(cfg.out_root) / "LATEST").write_text(key + "\n")
        index = pd.read_parquet(out / "index.parquet")
        meta = json.loads((out / "meta.json").read_text())
        return PrecomputeResult(out, key, True, len(index), meta["skipped"], index)

    manifest = pd.read_parquet(manifest_path)
    if "text" not in manifest.columns or (manifest["text"].fillna("") == "").all():
        raise ValueError(f"{manifest_path} has no captions; run `t2v caption` on it first")
    planned = plan(manifest, cfg)
    if planned.empty:
        raise ValueError(f"no clip of {manifest_path} fits bucket_config {cfg.bucket_config}; lower the resolution")
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae = load_vae(cfg.vae, device)
    text_encoder = TextEncoder(cfg.text_encoder, cfg.max_text_tokens, device)
    storage = getattr(torch, cfg.storage_dtype)

    Path(cfg.out_root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cfg.out_root))
    try:
        records, shard, tensors = [], 0, {}
        bar = tqdm(total=len(planned), desc="precompute", unit="clip", disable=not cfg.progress)
        for _, group in planned.groupby("bucket", sort=True):
            rows = group.to_dict("records")
            for i in range(0, len(rows), cfg.batch_size):
                batch = rows[i : i + cfg.batch_size]
                latents = vae.encode(torch.stack([clip_video(r) for r in batch]))
                text, mask = text_encoder.encode([str(r["text"]) for r in batch])
                for r, z, e, m in zip(batch, latents, text, mask, strict=True):
                    tensors[f"{r['clip_id']}.latent"] = z.to(storage).contiguous()
                    tensors[f"{r['clip_id']}.text"] = e[m].to(storage).contiguous()  # real tokens only
                    records.append(
                        {
                            "clip_id": r["clip_id"],
                            "split": r.get("split", "train"),
                            "bucket": r["bucket"],
                            "resolution": r["resolution"],
                            "num_frames": r["num_frames"],
                            "height": r["height"],
                            "width": r["width"],
                            "batch_size": r["batch_size"],
                            "latent_shape": list(z.shape),
                            "text_tokens": int(m.sum()),
                            "text": r["text"],
                            "shard": f"shard-{shard:05d}.safetensors",
                            "source": r["source"],
                            "frame_indices": list(r["frame_indices"]),
                            **{k: r[k] for k in ("aes", "motion", "sharpness") if k in r},
                        }
                    )
                    if len(tensors) >= 2 * cfg.shard_size:
                        save_file(tensors, tmp / f"shard-{shard:05d}.safetensors")
                        shard, tensors = shard + 1, {}
                bar.update(len(batch))
        if tensors:
            save_file(tensors, tmp / f"shard-{shard:05d}.safetensors")
        bar.close()
        index = pd.DataFrame(records)
        index.to_parquet(tmp / "index.parquet", index=False)
        meta = {
            "key": key,
            "manifest": str(manifest_path),
            "manifest_sha256": manifest_hash,
            "samples": len(index),
            "skipped": len(manifest) - len(index),
            "buckets": index.groupby("bucket").size().to_dict(),
            "encoders": describe(vae, text_encoder),
            "latent_channels": vae.latent_channels,
            "config": asdict(cfg),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        if out.exists():  # another run finished the same key first: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (Path(cfg.out_root) / "LATEST").write_text(key + "\n")
    return PrecomputeResult(out, key, False, len(index), meta["skipped"], index)


def resolve(folder: str | Path) -> Path:
    """A precompute folder, given itself or its root (through LATEST)."""
    folder = Path(folder)
    if (folder / "index.parquet").exists():
        return folder
    if (folder / "LATEST").exists():
        return folder / (folder / "LATEST").read_text().strip()
    raise ValueError(f"{folder} is not a precompute folder or root (no index.parquet, no LATEST); run `t2v precompute`")
