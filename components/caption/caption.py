"""Caption: the ingest manifest in, the same manifest with a caption per clip out.

    manifest -> this shard's clips (clip i belongs to shard i mod n, in clip-id order)
             -> skip clips already in this shard's part file (resume)
             -> batches: frames -> captioner -> clean-up (-> score suffix) -> appended to the part file, flushed
             -> when every shard's part is complete: captions.parquet, manifest.parquet, summary.json

Part files (`parts/shard-III-of-NNN.jsonl`, one JSON line per clip) are the only state: a killed run loses at most
the batch it was generating, and a re-run continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from components.caption.captioners import DEFAULT_PROMPT, FAMILIES, MetadataCaptioner, VLMCaptioner
from components.caption.cleanup import append_scores
from components.caption.frames import clip_frames
from components.common.files import atomic_path
from components.common.settings import setting
from model.inference.prompts import clean_caption

log = logging.getLogger(__name__)

CAPTIONERS = ("metadata", "vlm")


@dataclass(frozen=True)
class CaptionConfig:
    manifest: str = setting("data/ingest/manifest.parquet", "ingest manifest")
    out_dir: str = setting("data/caption", "output folder (parts/ keeps the finished batches)")
    captioner: str = setting("vlm", "vlm: a vision-language model; metadata: captions that came with the data")
    model: str = setting("llava-hf/llava-v1.6-mistral-7b-hf", "captioning model: hub id or local folder")
    family: str | None = setting(None, f"model family {FAMILIES}; read from the model's config when not given")
    prompt: str = setting(DEFAULT_PROMPT, "instruction given with the frames")
    frames: int | None = setting(None, "frames per clip (default: the family's)")
    batch_size: int = setting(8, "clips per generate call")
    min_new_tokens: int = setting(0, "shortest caption, in tokens")
    max_new_tokens: int = setting(200, "longest caption, in tokens")
    dtype: str = setting("auto", "auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32")
    device: str | None = setting(None, "cuda, cuda:1, cpu (default: cuda when present)")
    trust_remote_code: bool = setting(False, "run code shipped with the model")
    from_column: str | None = setting(None, "metadata captioner: take captions from this manifest column")
    append_scores: tuple[str, ...] = setting((), "score columns appended to captions, e.g. aes motion (Open-Sora 1.2)")
    shard: int = setting(0, "this run's shard, 0-based")
    num_shards: int = setting(1, "number of shards (clip i goes to shard i mod n)")
    progress: bool = setting(True, "progress bar")
    crash_after: int | None = setting(
        None,
        "drill: a first attempt (no finished batch before it) ends abruptly after this many batches; the retry "
        "must resume",
    )

    def models(self) -> dict[str, str | None]:
        """The pretrained weights these settings load, by setting (a task checks them at its start)."""
        return {"caption.model": self.model if self.captioner == "vlm" else None}


@dataclass
class CaptionResult:
    out_dir: Path
    captioned: int  # clips captioned by this run
    skipped: int  # clips found done in the part file
    complete: bool  # every shard done and the outputs written
    summary: dict | None
    timings: dict


def part_path(out_dir: Path, shard: int, num_shards: int) -> Path:
    return out_dir / "parts" / f"shard-{shard:03d}-of-{num_shards:03d}.jsonl"


def read_part(path: Path) -> dict[str, dict]:
    """clip_id -> record; a line cut short by a kill is ignored (that clip is captioned again)."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[record["clip_id"]] = record
    return done


def shard_rows(manifest: pd.DataFrame, shard: int, num_shards: int) -> pd.DataFrame:
    ordered = manifest.sort_values("clip_id", kind="stable").reset_index(drop=True)
    return ordered.iloc[shard::num_shards]


def _check(cfg: CaptionConfig) -> None:
    if cfg.captioner not in CAPTIONERS:
        raise ValueError(f"captioner={cfg.captioner!r} must be one of {CAPTIONERS}")
    if not 0 <= cfg.shard < cfg.num_shards:
        raise ValueError(f"shard {cfg.shard} of {cfg.num_shards}: need 0 <= shard < num_shards")
    if cfg.family is not None and cfg.family not in FAMILIES:
        raise ValueError(f"family={cfg.family!r} must be one of {FAMILIES}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size={cfg.batch_size} must be at least 1")
    if not Path(cfg.manifest).exists():
        raise ValueError(f"manifest {cfg.manifest} not found; run `t2v ingest` first or pass --manifest")


def build_captioner(cfg: CaptionConfig):
    if cfg.captioner == "metadata":
        return MetadataCaptioner(cfg.from_column)
    return VLMCaptioner(
        cfg.model,
        family=cfg.family,
        prompt=cfg.prompt,
        frames=cfg.frames,
        min_new_tokens=cfg.min_new_tokens,
        max_new_tokens=cfg.max_new_tokens,
        device=cfg.device,
        dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code,
    )


def caption(cfg: CaptionConfig, captioner=None) -> CaptionResult:
    """Caption this shard's clips (resuming), then write the outputs if every shard is done."""
    _check(cfg)
    out = Path(cfg.out_dir)
    manifest = pd.read_parquet(cfg.manifest)
    missing = [c for c in ("clip_id", "source") if c not in manifest.columns]
    if missing:
        raise ValueError(f"{cfg.manifest} lacks columns {missing}; give a manifest written by `t2v ingest`")
    if cfg.append_scores and (absent := [c for c in cfg.append_scores if c not in manifest.columns]):
        raise ValueError(f"--append-scores {absent}: not columns of {cfg.manifest} (it has {list(manifest.columns)})")
    rows = shard_rows(manifest, cfg.shard, cfg.num_shards)
    part = part_path(out, cfg.shard, cfg.num_shards)
    part.parent.mkdir(parents=True, exist_ok=True)
    done = read_part(part)
    todo = [r for r in rows.to_dict("records") if r["clip_id"] not in done]

    captioner = captioner or (build_captioner(cfg) if todo else None)
    timings = {"decode_s": 0.0, "caption_s": 0.0}
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc="caption", unit="clip", disable=not cfg.progress)
    crash_at = cfg.crash_after if len(todo) == len(rows) else None  # the drill ends a first attempt only
    with open(part, "a") as f:
        for i in range(0, len(todo), cfg.batch_size):
            batch = todo[i : i + cfg.batch_size]
            start = time.perf_counter()
            if isinstance(captioner, MetadataCaptioner):
                raw = captioner.caption(batch)
                timings["caption_s"] += time.perf_counter() - start
            else:
                frames = [clip_frames(r, captioner.frames) for r in batch]
                timings["decode_s"] += time.perf_counter() - start
                start = time.perf_counter()
                raw = captioner.caption_frames(frames)
                timings["caption_s"] += time.perf_counter() - start
            for row, text in zip(batch, raw, strict=True):
                final = clean_caption(text)
                if cfg.append_scores:
                    final = append_scores(final, {k: row.get(k) for k in cfg.append_scores})
                record = {"clip_id": row["clip_id"], "text": final, "raw": text, "captioner": captioner.name}
                f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
            if crash_at and i // cfg.batch_size + 1 == crash_at and i + cfg.batch_size < len(todo):
                log.warning("caption.crash_after=%d: ending the process (a drill)", cfg.crash_after)
                os._exit(75)
    bar.close()

    parts = [part_path(out, s, cfg.num_shards) for s in range(cfg.num_shards)]
    complete = all(
        set(shard_rows(manifest, s, cfg.num_shards).clip_id) <= set(read_part(p)) for s, p in enumerate(parts)
    )
    summary = write_outputs(manifest, parts, out, cfg) if complete else None
    return CaptionResult(out, len(todo), len(rows) - len(todo), complete, summary, timings)


def write_outputs(manifest: pd.DataFrame, parts: list[Path], out: Path, cfg: CaptionConfig) -> dict:
    """Merge the part files: captions.parquet (clip_id, text, raw, captioner), the captioned manifest.parquet
    (the input manifest with its text column filled), and summary.json."""
    records: dict[str, dict] = {}
    for p in parts:
        records.update(read_part(p))
    wanted = set(manifest.clip_id)
    stale = len(set(records) - wanted)  # from an earlier manifest; clip ids are content hashes, so harmless
    if stale:  # logged, not summarised: the summary holds only what the inputs determine (a DVC metric)
        log.info("%d captions of clips no longer in the manifest ignored", stale)
    records = {k: v for k, v in records.items() if k in wanted}
    captions = pd.DataFrame(
        [records[c] for c in sorted(records)], columns=["clip_id", "text", "raw", "captioner"]
    ).reset_index(drop=True)
    captioned = manifest.drop(columns=["text"], errors="ignore").merge(
        captions[["clip_id", "text"]], on="clip_id", how="left", validate="one_to_one"
    )
    words = captions.text.str.split().str.len().fillna(0).to_numpy()
    summary = {
        "clips": len(captions),
        "empty": int((captions.text.str.len() == 0).sum()),
        "words_mean": float(np.mean(words)) if len(words) else 0.0,
        "words_median": float(np.median(words)) if len(words) else 0.0,
        "words_min": int(words.min()) if len(words) else 0,
        "words_max": int(words.max()) if len(words) else 0,
        "captioner": sorted(set(captions.captioner)),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("shard", "progress")},
    }
    with atomic_path(out / "captions.parquet") as tmp:
        captions.to_parquet(tmp, index=False)
    with atomic_path(out / "manifest.parquet") as tmp:
        captioned.to_parquet(tmp, index=False)
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary
