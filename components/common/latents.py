"""Latent samples as every step reads them: what a sample is (bucket, frames, encoders), the dataset of a precompute
folder, the same samples encoded on access (online encoding), and batching.

A precompute folder (`t2v precompute`) holds sharded safetensors (per clip "<clip_id>.latent" and
"<clip_id>.text"), index.parquet (clip, split, bucket, shapes, shard) and meta.json; its root names the newest
folder in LATEST.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from components.common.video import read_clip_frames
from model.planning.buckets import latent_frames, resize_crop


def clip_video(row: dict) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1]: the planned frames, resized and centre-cropped to the bucket."""
    frames = read_clip_frames(row, list(row["frame_indices"]))
    frames = [resize_crop(f, int(row["height"]), int(row["width"])) for f in frames]
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float()  # (3, T, H, W)
    return video / 127.5 - 1.0


def resolve(folder: str | Path) -> Path:
    """A precompute folder, given itself or its root (through LATEST)."""
    folder = Path(folder)
    if (folder / "index.parquet").exists():
        return folder
    if (folder / "LATEST").exists():
        return folder / (folder / "LATEST").read_text().strip()
    raise ValueError(f"{folder} is not a precompute folder or root (no index.parquet, no LATEST); run `t2v precompute`")


class LatentDataset(torch.utils.data.Dataset):
    """Samples of one split of a precompute folder: dicts with latent (C, T, h, w), text (L, C_text), ids."""

    def __init__(self, folder: str | Path, split: str | None = "train"):
        self.folder = Path(folder)
        index_path = self.folder / "index.parquet"
        if not index_path.exists():
            raise ValueError(f"{self.folder} is not a precompute folder (no index.parquet); run `t2v precompute`")
        index = pd.read_parquet(index_path)
        self.index = (index if split is None else index[index.split == split]).reset_index(drop=True)
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _shard(self, name: str):
        if name not in self._handles:  # memory-mapped; opened lazily, once per worker
            self._handles[name] = safe_open(self.folder / name, framework="pt")
        return self._handles[name]

    def __getitem__(self, i: int) -> dict:
        row = self.index.iloc[int(i)]
        shard = self._shard(row.shard)
        return {
            "latent": shard.get_tensor(f"{row.clip_id}.latent").float(),
            "text": shard.get_tensor(f"{row.clip_id}.text").float(),
            "clip_id": row.clip_id,
            "bucket": row.bucket,
            "index": int(i),
        }


class EncodingDataset(torch.utils.data.Dataset):
    """The same samples as LatentDataset, encoded on access (online encoding): frames are read, resize-cropped
    and encoded by the VAE, captions by the text encoder, per sample. `index` has LatentDataset's columns."""

    def __init__(self, planned: pd.DataFrame, vae, text_encoder, split: str | None = "train"):
        rows = planned if split is None else planned[planned.get("split", "train") == split]
        self.index = rows.reset_index(drop=True).copy()
        f, c = vae.spatial_compression, vae.latent_channels
        t = vae.temporal_compression
        self.index["latent_shape"] = [
            [c, latent_frames(n, t), h // f, w // f]
            for n, h, w in zip(self.index.num_frames, self.index.height, self.index.width, strict=True)
        ]
        self.vae, self.text_encoder = vae, text_encoder

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        return self.encode(read_sample(self.index, i))

    @torch.no_grad()
    def encode(self, raw: dict) -> dict:
        """A sample as LatentDataset gives it, from read_sample's frames and caption (here, in this process)."""
        latent = self.vae.encode(raw["video"][None])[0].float().cpu()
        text, mask = self.text_encoder.encode([raw["caption"]])
        return {
            "latent": latent,
            "text": text[0][mask[0]].float().cpu(),
            "clip_id": raw["clip_id"],
            "bucket": raw["bucket"],
            "index": raw["index"],
        }


def read_sample(index: pd.DataFrame, i: int) -> dict:
    """Sample `i`'s frames (3, T, H, W), resized and cropped to its bucket, and its caption: the CPU half of online
    encoding, which DataLoader workers do."""
    row = index.iloc[int(i)].to_dict()
    return {"video": clip_video(row), "caption": str(row["text"]), "clip_id": row["clip_id"], "bucket": row["bucket"],
            "index": int(i)}  # fmt: skip


class FrameReader(torch.utils.data.Dataset):
    """An EncodingDataset's samples as read_sample gives them: what its DataLoader workers read, holding no encoder
    (CUDA models must not run in forked workers)."""

    def __init__(self, index: pd.DataFrame):
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        return read_sample(self.index, i)


def collate(samples: list[dict]) -> dict:
    """Stack latents (B, C, T, h, w); pad texts to the longest (B, L, C_text) with a mask (B, L)."""
    shapes = {tuple(s["latent"].shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"a batch mixes latent shapes {sorted(shapes)}; batches must come from one bucket")
    longest = max(1, max(s["text"].shape[0] for s in samples))
    channels = samples[0]["text"].shape[1]
    text = torch.zeros(len(samples), longest, channels)
    mask = torch.zeros(len(samples), longest, dtype=torch.bool)
    for k, s in enumerate(samples):
        n = s["text"].shape[0]
        text[k, :n], mask[k, :n] = s["text"], True
        if n == 0:
            mask[k, 0] = True  # an empty caption attends to one zero token instead of nothing
    return {
        "latent": torch.stack([s["latent"] for s in samples]),
        "text": text,
        "text_mask": mask,
        "clip_id": [s["clip_id"] for s in samples],
        "index": [s["index"] for s in samples],
    }
