"""Ingest: raw videos and images in, a filtered clip manifest with a held-out split out.

    inputs -> discover -> per source (in parallel): size checks, content hash, one decode pass
           -> clips with scores (one worker: on a second thread, while the next file decodes)
              | quarantine row with the reason
           -> near-duplicate and threshold filters -> split by groups of sources (a file and its re-encoded copy
              are one group) -> (optional) clip files
           -> manifest.parquet, manifest.csv (Open-Sora columns), rejected_clips.parquet, quarantine.parquet,
              files.parquet (each file's one fate: kept, filtered or quarantined, with the reason), summary.json

Each source's result is written to `cache/` as soon as it is known, keyed by the file's content hash and the
analysis settings, so a re-run skips finished work and an interrupted run loses nothing it already wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import fsspec
import pandas as pd
from tqdm.auto import tqdm

from components.common.files import atomic_path
from components.common.shards import shard_count
from components.ingest.config import OPEN_SORA_COLUMNS, IngestConfig
from components.ingest.filters import FATES, file_fates, filter_reason
from components.ingest.media import ANALYSIS_VERSION, Rejected, analyze_later
from components.ingest.plugins import load_scorers
from components.ingest.shards import part_path, read_parts, shard_of, write_part
from components.ingest.sources import discover, is_remote
from components.ingest.split import assign_splits, near_duplicates, source_groups

log = logging.getLogger(__name__)

# how a run fans out, not what it finds: left out of the summary, which is the same whatever the fan-out
SHARD_SETTINGS = ("num_shards", "files_per_shard", "shard", "merge")


@dataclass
class IngestResult:
    out_dir: Path
    clips: int
    rejected_clips: int
    sources: int
    quarantined: dict[str, int]
    ignored: int
    summary: dict
    cached: int = 0  # files whose analysis came from the cache (this run's business, not the summary's)


# --------------------------------------------------------------------------------------------- one source


def _fingerprint(cfg: IngestConfig) -> str:
    plugins = [cfg.aesthetic_model, cfg.aesthetic_head, cfg.ocr_model]
    settings = json.dumps(
        {"version": ANALYSIS_VERSION, "analysis": asdict(cfg.analysis), "max_bytes": cfg.max_bytes, "plugins": plugins},
        sort_keys=True,
    )
    return hashlib.sha256(settings.encode()).hexdigest()[:12]


def _size(spec: str) -> int:
    if is_remote(spec):
        fs, _, (path,) = fsspec.get_fs_token_paths(spec)
        return int(fs.size(path))
    return os.path.getsize(spec)


def content_hash(spec: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with fsspec.open(spec, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _quarantine(spec: str, reason: str, detail: str, size: int | None = None, digest: str | None = None) -> dict:
    return {"source": spec, "status": "quarantined", "reason": reason, "detail": detail, "bytes": size, "hash": digest}


def process_source(spec: str, cfg: IngestConfig, cache_dir: str) -> dict:
    """Analyze one source (or load its cached result); never raises for a bad file."""
    return start_source(spec, cfg, cache_dir)()


def start_source(spec: str, cfg: IngestConfig, cache_dir: str) -> Callable[[], dict]:
    """`process_source` in two parts: checks, hash and the decode pass now; the clips' scores and the cache entry
    when the returned function is called (on another thread, while the next file decodes)."""
    try:
        size = _size(spec)
    except (OSError, ValueError) as err:
        return _now(_quarantine(spec, "unreadable", f"cannot be opened ({err}); check the path and permissions"))
    if size == 0:
        return _now(_quarantine(spec, "zero_bytes", "the file is empty (0 bytes); copy it again from its source", 0))
    if size > cfg.max_bytes:
        reason = f"{size} bytes exceeds max_bytes={cfg.max_bytes}; split it or raise max_bytes"
        return _now(_quarantine(spec, "over_limit", reason, size))
    digest = content_hash(spec)
    cache = Path(cache_dir) / f"{digest}-{_fingerprint(cfg)}.json"
    if cache.exists():
        result = json.loads(cache.read_text())
        return _now({**result, "source": spec, "cached": True})
    scorers = load_scorers(cfg.aesthetic_model, cfg.aesthetic_head, cfg.ocr_model)

    def keep(result: dict) -> dict:
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps(result))
        return result

    try:
        if is_remote(spec):
            with fsspec.open(spec, "rb") as f:
                scored = analyze_later(f, spec, cfg.analysis, scorers)
        else:
            scored = analyze_later(spec, spec, cfg.analysis, scorers)
    except Rejected as rej:
        return _now(keep(_quarantine(spec, rej.reason, rej.detail, size, digest)))
    return lambda: keep({"source": spec, "status": "ok", "bytes": size, "hash": digest, "info": asdict(scored())})


def _now(result: dict) -> Callable[[], dict]:
    return lambda: result


# --------------------------------------------------------------------------------------------- filters, split


# ------------------------------------------------------------------------------------------------ the step


def _clip_rows(result: dict) -> list[dict]:
    info = result["info"]
    rows = []
    for clip in info["clips"]:
        n = clip["end_frame"] - clip["start_frame"]
        rows.append(
            {
                "clip_id": f"{result['hash'][:16]}_{clip['start_frame']:06d}_{clip['end_frame']:06d}",
                "path": result["source"],
                "text": "",
                "num_frames": n,
                "height": info["height"],
                "width": info["width"],
                "aspect_ratio": info["height"] / info["width"],
                "fps": info["fps"],
                "resolution": info["height"] * info["width"],
                "source": result["source"],
                "source_hash": result["hash"],
                "kind": info["kind"],
                "codec": info["codec"],
                "start_frame": clip["start_frame"],
                "end_frame": clip["end_frame"],
                "start_s": clip["start_s"],
                "end_s": clip["end_s"],
                "seek_time": clip["seek_time"],
                "timing": info["timing"],
                "vfr": info["vfr"],
                "rotation": info["rotation"],
                "motion": clip["motion"],
                "sharpness": clip["sharpness"],
                "brightness": clip["brightness"],
                "phash": clip["phash"],
                "note": info.get("note", ""),
                **clip["extra"],
            }
        )
    return rows


def check_inputs(cfg: IngestConfig) -> tuple[list[str], list[str]]:
    """The settings' cross-checks, then (sources, ignored files) of the inputs."""
    if not cfg.inputs:
        raise ValueError("no inputs: give folders, globs, list files, files or URLs to ingest")
    if cfg.filters.min_aesthetic is not None and not cfg.aesthetic_model:
        raise ValueError("min_aesthetic filters on the aesthetic score: pass --aesthetic-model and --aesthetic-head")
    if cfg.filters.max_text_area is not None and not cfg.ocr_model:
        raise ValueError("max_text_area filters on the text-area score: pass --ocr-model (a DB text detector)")
    if not cfg.merge:  # bad paths fail now, before any work; a merge analyses nothing and loads no model
        load_scorers(cfg.aesthetic_model, cfg.aesthetic_head, cfg.ocr_model)
    sources, ignored = discover(cfg.inputs)
    if not sources:
        raise ValueError(f"no video or image files found in {list(cfg.inputs)}")
    return sources, ignored


def analyze(cfg: IngestConfig, sources: list[str]) -> list[dict]:
    """Each source's result (from the cache, or analysed now and kept there), in the order of `sources`."""
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out_dir) / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)  # once there is work: a refused run leaves nothing behind
    results: list[dict] = []
    bar = tqdm(total=len(sources), desc="ingest", unit="file", disable=not cfg.progress)
    if cfg.workers <= 1:
        # one file decodes while the clips of the one before are scored (optical flow and the rest release the GIL)
        with ThreadPoolExecutor(1, thread_name_prefix="ingest-scores") as scoring:
            pending = []
            for spec in sources:
                pending.append(scoring.submit(start_source(spec, cfg, str(cache_dir))))
                pending[-1].add_done_callback(lambda _: bar.update())
            results = [future.result() for future in pending]
    else:
        with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(process_source, spec, cfg, str(cache_dir)) for spec in sources]
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
    bar.close()
    order = {spec: i for i, spec in enumerate(sources)}
    return sorted(results, key=lambda r: order[r["source"]])


def ingest(cfg: IngestConfig, parts: list[Path] | None = None) -> IngestResult:
    """Run the ingest step; see the module docstring. Bad inputs are quarantined, never fatal. With `merge`, the
    analysis is that of the shards' `parts` (default: those in <out_dir>/parts); see ingest_shard."""
    if cfg.shard is not None:
        raise ValueError(f"shard={cfg.shard} analyses one shard's files: run ingest_shard (t2v ingest --shard K)")
    sources, ignored = check_inputs(cfg)
    if not cfg.merge:
        return assemble(cfg, sources, ignored, analyze(cfg, sources))
    n = shard_count(cfg.num_shards, cfg.files_per_shard, len(sources))
    given = parts if parts is not None else [part_path(cfg.out_dir, k, n) for k in range(n)]
    return assemble(cfg, sources, ignored, read_parts([p for p in given if Path(p).exists()], sources, n))


def ingest_shard(cfg: IngestConfig) -> tuple[Path, int]:
    """Analyse the files of shard `cfg.shard` (of num_shards) into its part; (the part, its files). A retried task
    reads what its killed attempt finished from the cache."""
    sources, _ = check_inputs(cfg)
    n = shard_count(cfg.num_shards, cfg.files_per_shard, len(sources))
    if cfg.shard is None or not 0 <= cfg.shard < n:
        raise ValueError(f"shard={cfg.shard} must be one of the run's {n} shards (0 to {n - 1})")
    mine = [s for s in sources if shard_of(s, n) == cfg.shard]
    return write_part(part_path(cfg.out_dir, cfg.shard, n), analyze(cfg, mine)), len(mine)


def assemble(cfg: IngestConfig, sources: list[str], ignored: list[str], results: list[dict]) -> IngestResult:
    """What needs every file's result at once: filters, near-duplicates and split groups across all of them, the
    split, clip files, the manifest and the summary."""
    out = Path(cfg.out_dir)
    ok = [r for r in results if r["status"] == "ok"]
    quarantine = pd.DataFrame(
        [{k: r.get(k) for k in ("source", "reason", "detail", "bytes", "hash")} for r in results if r not in ok],
        columns=["source", "reason", "detail", "bytes", "hash"],
    )
    rows = [row for r in ok for row in _clip_rows(r)]
    dropped = [
        {"source": r["source"], "start_frame": d["start_frame"], "end_frame": d["end_frame"], "reason": d["reason"]}
        for r in ok
        for d in r["info"]["dropped"]
    ]

    kept, rejected = [], []
    duplicates = (
        near_duplicates([int(row["phash"], 16) for row in rows], cfg.filters.dedup_distance)
        if cfg.filters.dedup_distance is not None and cfg.filters.dedup_distance >= 0
        else [None] * len(rows)
    )
    seen: dict[str, str] = {}  # clip id -> source: byte-identical files give the same ids, kept once
    quality = [filter_reason(row, cfg.filters) for row in rows]
    for row, dup, reason in zip(rows, duplicates, quality, strict=True):
        if reason is None and row["clip_id"] in seen:
            reason = f"duplicate-file of {seen[row['clip_id']]}"
        if reason is None and dup is not None:
            reason = f"near-duplicate of {rows[dup]['clip_id']}"
        if reason is None:
            seen[row["clip_id"]] = row["path"]
        (rejected if reason else kept).append({**row, "reason": reason} if reason else row)
    rejected += [{**d, "clip_id": None} for d in dropped]

    # groups over every clip good enough to keep (near-duplicates included, whether removed or not)
    candidates = [row for row, reason in zip(rows, quality, strict=True) if reason is None]
    groups = source_groups(
        [row["source_hash"] for row in candidates], [int(row["phash"], 16) for row in candidates], cfg.split_distance
    )
    kept_sources = sorted({row["source_hash"] for row in kept})
    splits = assign_splits(kept_sources, cfg.split_seed, cfg.val_fraction, groups)
    members = Counter(groups.values())  # sources per group, those whose clips were all removed as copies included
    manifest = pd.DataFrame(kept, columns=list(rows[0]) if rows else list(OPEN_SORA_COLUMNS))
    manifest["split"] = [splits[h] for h in manifest["source_hash"]] if len(manifest) else []

    if cfg.clip_mode != "rows" and len(manifest):
        from components.ingest.clips import write_clips

        manifest = write_clips(manifest, out / "clips", cfg.clip_mode, workers=cfg.workers, progress=cfg.progress)

    manifest_path = out / "manifest.parquet"
    with atomic_path(manifest_path) as tmp:
        manifest.to_parquet(tmp, index=False)
    with atomic_path(out / "manifest.csv") as tmp:
        extra = [c for c in manifest.columns if c not in OPEN_SORA_COLUMNS]
        manifest[[*OPEN_SORA_COLUMNS, *extra]].to_csv(tmp, index=False)
    with atomic_path(out / "rejected_clips.parquet") as tmp:
        pd.DataFrame(rejected).to_parquet(tmp, index=False)
    with atomic_path(out / "quarantine.parquet") as tmp:
        quarantine.to_parquet(tmp, index=False)

    fates = file_fates(results, kept, rejected)
    with atomic_path(out / "files.parquet") as tmp:
        fates.to_parquet(tmp, index=False)

    # what the inputs determine only (a DVC metric): how many results came from the cache is the log's business
    cached = sum(bool(r.get("cached")) for r in results)
    log.info("%d of %d files analysed before (cache)", cached, len(sources))
    summary = {
        "inputs": list(cfg.inputs),
        "sources": len(sources),
        "sources_ok": len(ok),
        "quarantined": dict(Counter(quarantine["reason"])) if len(quarantine) else {},
        "ignored_files": len(ignored),
        "clips": len(manifest),
        "clips_train": int((manifest["split"] == "train").sum()) if len(manifest) else 0,
        "clips_val": int((manifest["split"] == "val").sum()) if len(manifest) else 0,
        "split_groups": len({groups[h] for h in kept_sources}),
        "sources_grouped": sum(n for n in members.values() if n > 1),
        "rejected_clips": dict(Counter(r["reason"].split(" ")[0] for r in rejected)),
        "files": {fate: dict(Counter(fates.code[fates.fate == fate])) for fate in FATES},
        "manifest_sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
        "config": {k: v for k, v in asdict(cfg).items() if k not in SHARD_SETTINGS},
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return IngestResult(
        out_dir=out,
        clips=len(manifest),
        rejected_clips=len(rejected),
        sources=len(sources),
        quarantined=summary["quarantined"],
        ignored=len(ignored),
        summary=summary,
        cached=cached,
    )
