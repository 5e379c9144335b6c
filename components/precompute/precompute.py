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
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from components.common.files import atomic_dir, atomic_path
from components.common.latents import clip_video, plan
from components.common.scores import SCORE_SETTINGS, passing
from components.common.shards import shard_count
from components.precompute.config import PrecomputeConfig
from model.planning.buckets import validate
from model.weights.encoders import TextEncoder, describe, load_vae

PRECOMPUTE_VERSION = 2  # 2: a safetensors file ends at an encoder batch's end


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


@dataclass(frozen=True)
class Layout:
    """What a keyed folder holds, decided before anything is encoded: the clips in encoder batches (per bucket), and
    the batches in safetensors files of at least shard_size clips. A file is encoded whole by one task, in these
    batches, so the tensors are the same whichever task (and however many) encoded it."""

    manifest: pd.DataFrame
    key: str
    files: list[list[list[dict]]]  # file -> batch -> clip row

    @property
    def clips(self) -> int:
        return sum(len(batch) for file in self.files for batch in file)


def layout(cfg: PrecomputeConfig) -> Layout:
    manifest_path = Path(cfg.manifest)
    if not manifest_path.exists():
        raise ValueError(f"manifest {manifest_path} not found; run `t2v caption` (or `t2v ingest`) first")
    validate(cfg.bucket_config)
    if cfg.frame_interval < 1:
        raise ValueError(f"frame_interval={cfg.frame_interval} must be >= 1")
    manifest = pd.read_parquet(manifest_path)
    key = cache_key(cfg, _selection_hash(manifest_path, manifest, cfg.subset))
    if (Path(cfg.out_root) / key / "index.parquet").exists():
        return Layout(manifest, key, [])
    if "text" not in manifest.columns or (manifest["text"].fillna("") == "").all():
        raise ValueError(f"{manifest_path} has no captions; run `t2v caption` on it first")
    planned = plan(manifest, cfg)
    if planned.empty:
        raise ValueError(
            f"no clip of {manifest_path} meets subset {cfg.subset} and fits bucket_config {cfg.bucket_config}; "
            "lower the resolution or the thresholds"
        )
    files, current = [], []
    for _, group in planned.groupby("bucket", sort=True):
        rows = group.to_dict("records")
        for i in range(0, len(rows), cfg.batch_size):
            current.append(rows[i : i + cfg.batch_size])
            if sum(map(len, current)) >= cfg.shard_size:
                files.append(current)
                current = []
    return Layout(manifest, key, [*files, current] if current else files)


def encoding_tasks(cfg: PrecomputeConfig, clips: int) -> int:
    """The encoding tasks of a run: num_shards, or one per clips_per_shard clips."""
    return shard_count(cfg.num_shards, cfg.clips_per_shard, clips)


def staging(cfg: PrecomputeConfig, key: str) -> Path:
    """Where the files of a keyed folder gather while tasks encode them (a retried task finds what it wrote); named by
    the file layout too, which the key leaves out (it changes no tensor)."""
    return Path(cfg.out_root) / f".{key}-{cfg.shard_size}x{cfg.batch_size}.partial"


def precompute(cfg: PrecomputeConfig) -> PrecomputeResult:
    """Encode the manifest's clips and captions into `<out_root>/<key>/` (or reuse it when it exists): each task's
    files in turn in this process (num_shards of them: the fan-out a pipeline run spreads over pods), then the merge;
    an interrupted run goes on from the files it wrote."""
    plan_ = layout(cfg)
    if plan_.files:
        n = encoding_tasks(cfg, plan_.clips)
        for shard in range(n):
            encode_files(cfg, plan_, shard, n)
    return finish(cfg, plan_)


def encode_files(cfg: PrecomputeConfig, plan_: Layout, shard: int, num_shards: int) -> int:
    """Encode the files of task `shard` of `num_shards` (file j goes to task j mod num_shards) into the staging
    folder, skipping those a killed attempt finished; the number encoded now."""
    folder = staging(cfg, plan_.key)
    todo = [j for j in range(shard, len(plan_.files), num_shards) if not (folder / f"shard-{j:05d}.parquet").exists()]
    if not todo:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae = load_vae(cfg.vae, device)
    text_encoder = TextEncoder(cfg.text_encoder, cfg.max_text_tokens, device)
    encoders = {"encoders": describe(vae, text_encoder), "latent_channels": vae.latent_channels}
    with atomic_path(folder / "encoders.json") as tmp:
        tmp.write_text(json.dumps(encoders, indent=2, sort_keys=True))
    storage = getattr(torch, cfg.storage_dtype)
    bar = tqdm(total=sum(len(b) for j in todo for b in plan_.files[j]), desc="precompute", unit="clip",
               disable=not cfg.progress)  # fmt: skip
    for j in todo:
        name, records, tensors = f"shard-{j:05d}.safetensors", [], {}
        for batch in plan_.files[j]:
            latents = vae.encode(torch.stack([clip_video(r) for r in batch]))
            text, mask = text_encoder.encode([str(r["text"]) for r in batch])
            for r, z, e, m in zip(batch, latents, text, mask, strict=True):
                tensors[f"{r['clip_id']}.latent"] = z.to(storage).contiguous()
                tensors[f"{r['clip_id']}.text"] = e[m].to(storage).contiguous()  # real tokens only
                records.append(_record(r, z, m, name))
            bar.update(len(batch))
        with atomic_path(folder / name) as tmp:
            save_file(tensors, tmp)
        with atomic_path(folder / f"shard-{j:05d}.parquet") as tmp:  # last: the file is done
            pd.DataFrame(records).to_parquet(tmp, index=False)
    bar.close()
    return len(todo)


def _record(r: dict, z: torch.Tensor, mask: torch.Tensor, name: str) -> dict:
    return {
        "clip_id": r["clip_id"],
        "split": r.get("split", "train"),
        "bucket": r["bucket"],
        "resolution": r["resolution"],
        "num_frames": r["num_frames"],
        "height": r["height"],
        "width": r["width"],
        "batch_size": r["batch_size"],
        "latent_shape": list(z.shape),
        "text_tokens": int(mask.sum()),
        "text": r["text"],
        "shard": name,
        "source": r["source"],
        "frame_indices": list(r["frame_indices"]),
        **{k: r[k] for k in SCORE_SETTINGS if k in r},
    }


def finish(cfg: PrecomputeConfig, plan_: Layout) -> PrecomputeResult:
    """The keyed folder from every file the tasks wrote: the files, index.parquet and meta.json, renamed into place
    at once; `<out_root>/LATEST` names it. A file no task wrote is an error that names its task."""
    root, out = Path(cfg.out_root), Path(cfg.out_root) / plan_.key
    if not (out / "index.parquet").exists():
        folder = staging(cfg, plan_.key)
        n = encoding_tasks(cfg, plan_.clips)
        missing = [j for j in range(len(plan_.files)) if not (folder / f"shard-{j:05d}.parquet").exists()]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(plan_.files)} files of {plan_.key} were not encoded (tasks "
                f"{sorted({j % n for j in missing})} of {n} did not finish); run them again, then merge"
            )
        parts = [folder / f"shard-{j:05d}.parquet" for j in range(len(plan_.files))]
        index = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        encoders = json.loads((folder / "encoders.json").read_text())
        manifest_path = Path(cfg.manifest)
        meta = {
            "key": plan_.key,
            "manifest": str(manifest_path),
            "manifest_sha256": _manifest_hash(manifest_path),
            "subset": cfg.subset,
            "samples": len(index),
            "skipped": len(plan_.manifest) - len(index),
            "buckets": index.groupby("bucket").size().to_dict(),
            **encoders,
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("num_shards", "clips_per_shard")},
        }
        with atomic_dir(out, replace=False) as tmp:  # another run that finished the same key first wins
            for j in range(len(plan_.files)):
                (folder / f"shard-{j:05d}.safetensors").replace(tmp / f"shard-{j:05d}.safetensors")
            index.to_parquet(tmp / "index.parquet", index=False)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        shutil.rmtree(folder)
        reused = False
    else:
        reused = True
    (root / "LATEST").write_text(plan_.key + "\n")
    index = pd.read_parquet(out / "index.parquet")
    meta = json.loads((out / "meta.json").read_text())
    return PrecomputeResult(out, plan_.key, reused, len(index), meta["skipped"], index)
