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
