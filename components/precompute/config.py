"""The precompute step's settings (what a sample is, and where and how the encoded cache is written)."""

from __future__ import annotations

from dataclasses import dataclass

from components.common.encoding import EncodingConfig
from components.common.settings import setting


@dataclass(frozen=True)
class PrecomputeConfig(EncodingConfig):
    out_root: str = setting("data/precompute", "where the keyed folders go (<out_root>/<key>/, LATEST)")
    shard_size: int = setting(256, "clips per safetensors shard")
    batch_size: int = setting(8, "clips per encoder call")
    storage_dtype: str = setting("float32", "float32, bfloat16 or float16 (half the disk)")
    progress: bool = setting(True, "progress bar")
    num_shards: int = setting(
        0,
        "encoding tasks a pipeline run fans out over (one GPU each), each writing every num_shards-th safetensors "
        "file (0: one per clips_per_shard clips); `t2v precompute` alone encodes every file itself",
    )
    clips_per_shard: int = setting(50_000, "clips per encoding task when num_shards is 0")

    def __post_init__(self):
        if self.shard_size < 1 or self.batch_size < 1:
            raise ValueError(f"shard_size={self.shard_size} and batch_size={self.batch_size} must be >= 1")
        if self.num_shards < 0 or self.clips_per_shard < 1:
            raise ValueError(f"num_shards={self.num_shards} must be >= 0, clips_per_shard={self.clips_per_shard} >= 1")
