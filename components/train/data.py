"""Training data: the stage's samples (from a precompute folder, or encoded online) and a bucket batch sampler.

Every batch holds samples of one bucket (same latent shape), as many as that bucket's batch size. The order is a
pure function of (seed, epoch); the sampler's position is part of a checkpoint, so a resumed run sees exactly
the batches the interrupted one would have. Batches are global: with several processes each takes its slice
(rank::world_size) of every batch, so what is trained does not depend on how many processes share it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from components.common.clip_plan import plan
from components.common.latents import EncodingDataset, FrameReader, LatentDataset, collate, resolve
from components.common.scores import passing
from components.common.settings import read_yaml
from components.train.config import STAGE_FRAMES, TrainConfig


class BucketBatchSampler(torch.utils.data.Sampler):
    """Global batches of dataset positions, one bucket per batch; deterministic and resumable.

    The global batches do not depend on the number of processes: a bucket's last, short batch is filled up from the
    start of the bucket's order (or dropped with drop_last), and every process takes its share
    (`batch[rank::world_size]`). A bucket batch size below the number of processes is an error."""

    def __init__(
        self,
        index: pd.DataFrame,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        batch_sizes: dict[str, int] | None = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world_size {world_size}")
        self.buckets = {b: np.flatnonzero(index.bucket.to_numpy() == b) for b in sorted(set(index.bucket))}
        sizes = batch_sizes or index.groupby("bucket").batch_size.first().to_dict()
        self.batch_sizes = {b: int(sizes[b]) for b in self.buckets}
        small = {b: n for b, n in self.batch_sizes.items() if n < world_size}
        if small:
            raise ValueError(
                f"bucket batch sizes {small} are below the {world_size} data-parallel processes: every process needs "
                "a sample of every batch; raise the batch sizes in the bucket config or use fewer processes"
            )
        self.seed, self.rank, self.world_size, self.drop_last = seed, rank, world_size, drop_last
        self.epoch, self.position = 0, 0  # position: batches of this epoch already yielded

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every global batch of `epoch`, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for bucket, members in self.buckets.items():
            order = members[rng.permutation(len(members))]
            size = self.batch_sizes[bucket]
            for start in range(0, len(order), size):
                batch = order[start : start + size].tolist()
                if len(batch) < size and not self.drop_last:
                    batch = batch + np.resize(order, size - len(batch)).tolist()
                if len(batch) == size:
                    batches.append(batch)
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            batches = self.epoch_batches(self.epoch)
            while self.position < len(batches):
                batch = batches[self.position]
                self.position += 1
                yield batch[self.rank :: self.world_size]
            self.epoch, self.position = self.epoch + 1, 0

    def __len__(self) -> int:
        return len(self.epoch_batches(self.epoch))

    def set_consumed(self, batches: int) -> None:
        """Continue after `batches` global batches (counted by the training loop, which, unlike this sampler's
        own position, is not ahead by the batches a DataLoader prefetched)."""
        epoch = 0
        while batches >= (n := len(self.epoch_batches(epoch))):
            batches, epoch = batches - n, epoch + 1
        self.epoch, self.position = epoch, batches

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"checkpoint sampler seed {state['seed']} differs from this run's seed {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def preset_batch_sizes(index: pd.DataFrame, preset: dict, data_parallel: int) -> dict[str, int]:
    """Global batch size per bucket from a per-GPU bucket preset {resolution: {frames: [probability, batch]}}
    (configs/buckets/): the preset's batch for the bucket's resolution and frame count x data-parallel processes."""
    sizes, missing = {}, []
    for bucket, row in index.groupby("bucket").first().iterrows():
        entry = preset.get(str(row.resolution), {})
        value = entry.get(int(row.num_frames), entry.get(str(row.num_frames)))
        if value is None:
            missing.append(bucket)
            continue
        sizes[bucket] = int(value[1] if isinstance(value, list | tuple) else value) * data_parallel
    if missing:
        raise ValueError(
            f"buckets {missing} have no batch size in the bucket preset (resolutions {sorted(preset)}): the preset "
            "leaves out buckets where one sample does not fit this GPU; precompute without them or pick a preset "
            "for a larger GPU"
        )
    return sizes


def select(index, cfg: TrainConfig):
    """The stage's samples: by frame count, and (stage 3) by scores."""
    frames = STAGE_FRAMES[cfg.stage] if cfg.frames == "auto" else cfg.frames
    keep = np.ones(len(index), bool)
    if frames == "images":
        keep &= index.num_frames.to_numpy() == 1
    elif frames == "videos":
        keep &= index.num_frames.to_numpy() > 1
    return keep & passing(index, cfg.subset, f"stage{cfg.stage}.subset")


def batches(dataset, sampler, num_workers: int) -> Iterator[dict]:
    """The loop's batches. Precomputed: DataLoader workers read and collate them. Online encoding: the workers read
    and resize frames (CPU work), and this process encodes them, so the encoders (on the GPU) never run in a forked
    worker."""
    loader = torch.utils.data.DataLoader
    if isinstance(dataset, EncodingDataset):
        raw = loader(FrameReader(dataset.index), batch_sampler=sampler, collate_fn=list, num_workers=num_workers)
        return (collate([dataset.encode(sample) for sample in samples]) for samples in raw)
    return iter(loader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers))


def datasets(cfg: TrainConfig, device: str):
    """(train, val, meta): precomputed samples, or (cfg.online) samples encoded as they are read."""
    if cfg.online is None:
        folder = resolve(cfg.data)
        meta = json.loads((folder / "meta.json").read_text())
        train, val = LatentDataset(folder, split="train"), LatentDataset(folder, split="val")
    else:
        import hashlib

        import pandas as pd

        from model.weights.encoders import TextEncoder, describe, load_vae

        on = cfg.online
        manifest_path = Path(on.manifest)
        if not manifest_path.exists():
            raise ValueError(f"online.manifest {manifest_path} not found; run `t2v caption` first")
        planned = plan(pd.read_parquet(manifest_path), on)
        vae, text_encoder = load_vae(on.vae, device), TextEncoder(on.text_encoder, on.max_text_tokens, device)
        train, val = (EncodingDataset(planned, vae, text_encoder, split) for split in ("train", "val"))
        meta = {
            "latent_channels": vae.latent_channels,
            "encoders": describe(vae, text_encoder),
            "manifest_sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
            "key": "online",
        }
    # one canonical order (by clip id), so positions, batches and draws do not depend on how the data was stored
    train.index = train.index[select(train.index, cfg)].sort_values("clip_id").reset_index(drop=True)
    val.index = val.index[select(val.index, cfg)].sort_values("clip_id").reset_index(drop=True)
    if len(train) == 0:
        raise ValueError(
            f"no training samples in {cfg.data} for stage {cfg.stage} (frames={cfg.frames}, subset={cfg.subset})"
        )
    return train, val, meta


def bucket_batch_sizes(cfg: TrainConfig, index: pd.DataFrame, data_parallel: int) -> dict[str, int] | None:
    """Global batch sizes from the configured bucket preset (inline or a YAML file); None without one (the sizes
    the precompute chose)."""
    if cfg.buckets is None:
        return None
    preset = cfg.buckets if isinstance(cfg.buckets, dict) else read_yaml(cfg.buckets, "bucket preset")
    return preset_batch_sizes(index, preset, data_parallel)


def latent_side(index: pd.DataFrame) -> int:
    """The largest latent height or width among the samples (the sample size of a model built from scratch)."""
    return int(max(max(s[-2:]) for s in index.latent_shape))
