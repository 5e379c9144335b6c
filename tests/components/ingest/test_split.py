"""The held-out split by groups: a file and its re-encoded copy never straddle it, and the split is the same
whatever the number of shards a run fans out over."""

import subprocess

import pandas as pd
import pytest

from components.common import settings
from components.ingest.config import IngestConfig
from components.ingest.ingest import ingest, ingest_shard
from components.ingest.shards import shard_of
from components.ingest.split import assign_splits, source_groups

# six kinds of footage (ffmpeg's test sources, textured as camera footage is), 3 s each. A perceptual hash of a
# near-flat picture (ffmpeg's rgbtestsrc: three pure colour bars) flips bits under re-encoding: such footage would
# need a larger split_distance.
FOOTAGE = ["testsrc", "testsrc2", "mandelbrot", "smptebars", "life=ratio=0.2:mold=10:size=40x30:seed=7,scale=160x120",
           "sierpinski=size=160x120:seed=7"]  # fmt: skip


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Each source twice: the file, and a damaged re-encode of it (other codec settings, blurred, other bytes)."""
    root = tmp_path_factory.mktemp("footage")
    pairs = []
    for k, source in enumerate(FOOTAGE):
        original, copy = root / f"s{k}.mp4", root / f"s{k}_reencoded.mkv"
        common = ["ffmpeg", "-v", "error", "-y"]
        size = ["-t", "3", "-s", "160x120", "-r", "25", "-pix_fmt", "yuv420p"]
        subprocess.run([*common, "-f", "lavfi", "-i", source, *size, str(original)], check=True)
        damage = ["-vf", "gblur=sigma=0.8", "-c:v", "libx264", "-crf", "38", "-bf", "0"]
        subprocess.run([*common, "-i", str(original), *damage, str(copy)], check=True)
        pairs.append((original, copy))
    return root, pairs


def split_by_file(root, out, **overrides):
    cfg = IngestConfig(inputs=(str(root),), out_dir=str(out), cache_dir=str(root.parent / "cache"), progress=False)
    result = ingest(settings.updated(cfg, {"val_fraction": 0.5, **overrides}))
    manifest = pd.read_parquet(out / "manifest.parquet")
    return result.summary, dict(zip(manifest.source.str.rsplit("/", n=1).str[-1], manifest.split, strict=False))


@pytest.mark.parametrize("dedup", [None, 4], ids=["dedup-off", "dedup-on"])
def test_a_file_and_its_reencoded_copy_never_straddle_the_split(footage, tmp_path, dedup):
    root, pairs = footage
    for seed in range(4):
        summary, split = split_by_file(root, tmp_path / str(seed), split_seed=seed, **{"filters.dedup_distance": dedup})
        for original, copy in pairs:
            if copy.name in split:  # removed as a near-duplicate of its original when dedup is on
                assert split[original.name] == split[copy.name], (seed, original.name)
            else:
                assert dedup is not None
        assert summary["split_groups"] == len(pairs) and summary["sources_grouped"] == 2 * len(pairs)
        assert set(split.values()) == {"train", "val"}


def test_without_groups_copies_do_straddle(footage, tmp_path):
    """The check above can fail: split by file alone, some seed puts a copy and its original apart."""
    root, pairs = footage
    apart = 0
    for seed in range(4):
        _, split = split_by_file(root, tmp_path / str(seed), split_seed=seed, split_distance=None,
                                 **{"filters.dedup_distance": None})  # fmt: skip
        apart += sum(split[a.name] != split[b.name] for a, b in pairs)
    assert apart > 0


def test_groups_are_transitive_and_decided_once():
    # a~b (2 bits), b~c (3 bits), a and c 5 bits apart: one group at distance 3; d on its own
    a, b, c, d = 0, 0b11, 0b11111, (1 << 64) - 1
    groups = source_groups(["A", "B", "C", "D"], [a, b, c, d], max_distance=3)
    assert groups == {"A": "A", "B": "A", "C": "A", "D": "D"}
    assert source_groups(["A", "B"], [a, b], max_distance=None) == {"A": "A", "B": "B"}
    for seed in range(20):
        splits = assign_splits(["A", "B", "C", "D"], seed, 0.5, groups)
        assert splits["A"] == splits["B"] == splits["C"] and "val" in splits.values()


@pytest.mark.parametrize("distance", [-1, 65])
def test_a_split_distance_outside_the_hash_is_refused_by_name(distance):
    with pytest.raises(ValueError, match=rf"split_distance={distance} must be a number of phash bits in \[0, 64\]"):
        IngestConfig(inputs=("x",), split_distance=distance)


def test_three_shards_give_the_manifest_of_one(footage, tmp_path):
    """Fanned out over three shards (near-duplicates in different shards, analysed with a cache of their own), the
    merge writes the manifest, rejections, fates and summary of one process; a missing shard is named."""
    root, pairs = footage
    one = IngestConfig(inputs=(str(root),), out_dir=str(tmp_path / "one"), cache_dir=str(tmp_path / "cache1"),
                       val_fraction=0.5, progress=False)  # fmt: skip
    whole = ingest(one)
    fanned = settings.updated(one, {"out_dir": str(tmp_path / "three"), "cache_dir": str(tmp_path / "cache3"),
                                    "num_shards": 3})  # fmt: skip
    assert any(shard_of(str(a), 3) != shard_of(str(b), 3) for a, b in pairs)  # copies the merge must find apart
    for k in (0, 2):
        ingest_shard(settings.updated(fanned, {"shard": k}))
    with pytest.raises(ValueError, match=r"shards \[1\] of 3 did not finish"):
        ingest(settings.updated(fanned, {"merge": True}))
    assert not (tmp_path / "three" / "manifest.parquet").exists()
    ingest_shard(settings.updated(fanned, {"shard": 1}))
    merged = ingest(settings.updated(fanned, {"merge": True}))
    for name in ("manifest.parquet", "rejected_clips.parquet", "files.parquet", "quarantine.parquet"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "three" / name).read_bytes(), name
    assert merged.summary == {**whole.summary, "config": {**whole.summary["config"], "out_dir": fanned.out_dir,
                                                          "cache_dir": fanned.cache_dir}}  # fmt: skip
    assert whole.summary["rejected_clips"]["near-duplicate"] > 0
