"""Ingest fanned out over files: which shard a file belongs to, and the part file each shard's task writes.

A file's shard is a hash of its name (path or URL as the inputs list it), so adding files moves none of the others,
and no task has to read a file's bytes to place it. Each shard's task analyses its files (the decode pass, scenes,
scores: the costly part) into a part, one JSON line per file, the same result the per-file cache holds; the merge
reads every part and does what needs all files at once. The manifest is the same whatever the number of shards:
the merge orders the results as the inputs list the files, and each result depends on its file alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from components.common.files import atomic_path


def shard_of(source: str, num_shards: int) -> int:
    """The shard of file `source` among `num_shards`."""
    return int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "big") % num_shards


def part_path(out_dir: str | Path, shard: int, num_shards: int) -> Path:
    return Path(out_dir) / "parts" / f"shard-{shard}-of-{num_shards}.jsonl"


def write_part(path: Path, results: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        # a result as the file's analysis gives it: whether this run found it in the cache is not part of it
        tmp.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "cached"}, sort_keys=True) + "\n"
                               for r in results))  # fmt: skip
    return path


def read_parts(parts: list[Path], sources: list[str], num_shards: int) -> list[dict]:
    """Every source's result from the shards' parts, in the order of `sources`; a file no part holds is an error
    that names its shard (a shard's task that did not finish: run it again, its cache keeps what it did)."""
    results = {}
    for part in parts:
        for line in Path(part).read_text().splitlines():
            result = json.loads(line)
            results[result["source"]] = result
    missing = [s for s in sources if s not in results]
    if missing:
        shards = sorted({shard_of(s, num_shards) for s in missing})
        raise ValueError(
            f"{len(missing)} of {len(sources)} files have no result in the {len(parts)} parts given (first: "
            f"{missing[0]}): shards {shards} of {num_shards} did not finish; run them again (--shard K), then merge"
        )
    return [results[s] for s in sources]
