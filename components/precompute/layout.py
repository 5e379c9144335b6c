"""How a precompute folder is laid out before anything is encoded, and joined after: its key, the clips in encoder
batches and the batches in safetensors files (`layout`), the staging folder the encoding tasks write into, and the
merge that renames it into place (`finish`). Torch-free: the tasks that list the shards and merge them load no
encoder."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from components.common.clip_plan import plan
from components.common.files import atomic_dir
from components.common.scores import passing
from components.common.shards import shard_count
from components.precompute.config import PrecomputeConfig
from model.planning.buckets import validate

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
