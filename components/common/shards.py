"""How many tasks a fanned-out data step runs: what the recipe states, or one per so many items of the data."""

from __future__ import annotations

import math


def shard_count(num_shards: int, per_shard: int, items: int) -> int:
    """`num_shards`, or where it is 0, one shard per `per_shard` items (at least one)."""
    return num_shards or max(1, math.ceil(items / per_shard))
