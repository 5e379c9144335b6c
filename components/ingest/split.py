"""Near-duplicate search over perceptual hashes, and the held-out split by groups of sources.

Two files of the same footage (a re-encode, a trimmed copy) have different bytes but clips whose hashes are a few
bits apart. Sources that share such a clip form one group (union-find over sources), and a group goes to one
split: held-out clips never have a near copy in training.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator

import numpy as np

from components.common.scores import hamming


class HashIndex:
    """Multi-index search for 64-bit hashes within `max_distance` bits: the bits are split into max_distance + 1
    bands; two hashes within the distance agree exactly on at least one band (pigeonhole), so only hashes
    sharing a band are compared."""

    def __init__(self, max_distance: int):
        self.max_distance = max_distance
        edges = np.linspace(0, 64, max_distance + 2).astype(int)
        self.bands = [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in itertools.pairwise(edges)]
        self.tables: list[dict[int, list[int]]] = [{} for _ in self.bands]
        self.hashes: dict[int, int] = {}

    def _keys(self, h: int) -> list[int]:
        return [(h >> lo) & mask for lo, mask in self.bands]

    def add(self, i: int, h: int) -> None:
        self.hashes[i] = h
        for table, key in zip(self.tables, self._keys(h), strict=True):
            table.setdefault(key, []).append(i)

    def near(self, h: int) -> Iterator[int]:
        """Indices added before whose hash is within the distance of `h` (each once, in the order added)."""
        found: set[int] = set()
        for table, key in zip(self.tables, self._keys(h), strict=True):
            for j in table.get(key, ()):
                if j not in found and hamming(h, self.hashes[j]) <= self.max_distance:
                    found.add(j)
        yield from sorted(found)


def near_duplicates(hashes: list[int], max_distance: int) -> list[int | None]:
    """For each hash, the index of the first earlier kept hash within `max_distance` bits (None if it is kept)."""
    index = HashIndex(max_distance)
    out: list[int | None] = []
    for i, h in enumerate(hashes):
        match = next(index.near(h), None)
        out.append(match)
        if match is None:
            index.add(i, h)
    return out


def source_groups(sources: list[str], hashes: list[int], max_distance: int | None) -> dict[str, str]:
    """Group of each source (by clip: `sources[i]` holds a clip of hash `hashes[i]`): sources with clips within
    `max_distance` bits are one group, named by its smallest source. None: each source is its own group."""
    parent = {s: s for s in sources}

    def find(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    if max_distance is not None:
        index = HashIndex(max_distance)
        for i, h in enumerate(hashes):
            for j in index.near(h):
                a, b = find(sources[i]), find(sources[j])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            index.add(i, h)
    return {s: find(s) for s in parent}


def split_of(key: str, seed: int, fraction: float) -> str:
    """'val' for a deterministic `fraction` of keys (source or group content hashes, and the seed), else 'train'."""
    u = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:15], 16) / 16**15
    return "val" if u < fraction else "train"


def assign_splits(
    source_hashes: list[str], seed: int, fraction: float, groups: dict[str, str] | None = None
) -> dict[str, str]:
    """Split of each source, decided once per group (`groups`: source -> group; default each its own). With two or
    more groups and fraction > 0, at least one group is held out."""
    group = {h: (groups or {}).get(h, h) for h in source_hashes}
    decided = {g: split_of(g, seed, fraction) for g in set(group.values())}
    if fraction > 0 and len(decided) >= 2 and "val" not in decided.values():
        key = lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest()  # noqa: E731
        decided[min(decided, key=key)] = "val"
    return {h: decided[g] for h, g in group.items()}
