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

import json

import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from components.common.files import atomic_path
from components.common.latents import clip_video
from components.common.scores import SCORE_SETTINGS
from components.precompute.config import PrecomputeConfig
from components.precompute.layout import Layout, PrecomputeResult, encoding_tasks, finish, layout, staging
from model.weights.encoders import TextEncoder, describe, load_vae


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
