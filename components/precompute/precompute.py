"""Precompute: a captioned manifest in, VAE latents and text embeddings out, once, for every training run.

    manifest -> each clip's bucket (fixed here) -> frames at the sampling interval, centred in the clip,
             -> resize-crop to the bucket -> VAE latents; captions -> T5 embeddings
             -> <out_root>/<key>/shard-NNNNN.safetensors (per clip: "<clip_id>.latent", "<clip_id>.text")
                and index.parquet (clip, split, bucket, shapes, shard), meta.json

<key> hashes what the result depends on (the manifest's content and the clips a `subset` keeps, the encoders, the
buckets, the frame sampling, the seed): a second run with the same inputs reuses the folder; any change makes a new
one. The folder appears only when complete (built beside it, then renamed); `<out_root>/LATEST` names the last one
written or reused, so training can be pointed at the root.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from components.common.files import atomic_dir
from components.common.latents import clip_video, plan
from components.common.scores import SCORE_SETTINGS, passing
from components.precompute.config import PrecomputeConfig
from model.planning.buckets import validate
from model.weights.encoders import TextEncoder, describe, load_vae

PRECOMPUTE_VERSION = 1


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


def _selection_hash(path: Path, manifest: pd.DataFrame, subset: dict) -> str:
    """What is encoded, by content: the manifest file's hash, and the clips the subset keeps where it drops any (the
    same clips give the same key, whatever thresholds chose them)."""
    digest = _manifest_hash(path)
    kept = manifest["clip_id"][passing(manifest, subset)] if subset else manifest["clip_id"]
    if len(kept) == len(manifest):
        return digest
    return hashlib.sha256((digest + "\n" + "\n".join(sorted(map(str, kept)))).encode()).hexdigest()


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


def precompute(cfg: PrecomputeConfig) -> PrecomputeResult:
    """Encode the manifest's clips and captions into `<out_root>/<key>/` (or reuse it when it exists)."""
    manifest_path = Path(cfg.manifest)
    if not manifest_path.exists():
        raise ValueError(f"manifest {manifest_path} not found; run `t2v caption` (or `t2v ingest`) first")
    validate(cfg.bucket_config)
    if cfg.frame_interval < 1:
        raise ValueError(f"frame_interval={cfg.frame_interval} must be >= 1")
    manifest = pd.read_parquet(manifest_path)
    key = cache_key(cfg, _selection_hash(manifest_path, manifest, cfg.subset))
    out = Path(cfg.out_root) / key
    if (out / "index.parquet").exists():
        (Path(cfg.out_root) / "LATEST").write_text(key + "\n")
        index = pd.read_parquet(out / "index.parquet")
        meta = json.loads((out / "meta.json").read_text())
        return PrecomputeResult(out, key, True, len(index), meta["skipped"], index)

    if "text" not in manifest.columns or (manifest["text"].fillna("") == "").all():
        raise ValueError(f"{manifest_path} has no captions; run `t2v caption` on it first")
    planned = plan(manifest, cfg)
    if planned.empty:
        raise ValueError(
            f"no clip of {manifest_path} meets subset {cfg.subset} and fits bucket_config {cfg.bucket_config}; "
            "lower the resolution or the thresholds"
        )
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae = load_vae(cfg.vae, device)
    text_encoder = TextEncoder(cfg.text_encoder, cfg.max_text_tokens, device)
    storage = getattr(torch, cfg.storage_dtype)

    with atomic_dir(out, replace=False) as tmp:  # another run that finished the same key first wins
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
                            **{k: r[k] for k in SCORE_SETTINGS if k in r},
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
            "manifest_sha256": _manifest_hash(manifest_path),
            "subset": cfg.subset,
            "samples": len(index),
            "skipped": len(manifest) - len(index),
            "buckets": index.groupby("bucket").size().to_dict(),
            "encoders": describe(vae, text_encoder),
            "latent_channels": vae.latent_channels,
            "config": asdict(cfg),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    (Path(cfg.out_root) / "LATEST").write_text(key + "\n")
    return PrecomputeResult(out, key, False, len(index), meta["skipped"], index)
