import itertools
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file

from components.common.latents import LatentDataset, collate
from components.train.data import BucketBatchSampler

ROOT = Path(__file__).resolve().parents[3]


def index(counts: dict[str, tuple[int, int]]) -> pd.DataFrame:
    rows = []
    for bucket, (n, batch) in counts.items():
        rows += [{"clip_id": f"{bucket}-{i}", "bucket": bucket, "batch_size": batch} for i in range(n)]
    return pd.DataFrame(rows)


def test_each_batch_is_one_bucket_full_size_and_an_epoch_covers_every_sample():
    idx = index({"a": (10, 4), "b": (7, 2)})
    sampler = BucketBatchSampler(idx, seed=3)
    batches = sampler.epoch_batches(0)
    assert sorted(set(i for b in batches for i in b)) == list(range(17))
    for b in batches:
        assert len(set(idx.bucket.iloc[b])) == 1
    a = [b for b in batches if idx.bucket.iloc[b[0]] == "a"]
    assert len(a) == 3 and {len(b) for b in a} == {4}  # the short last batch (2) is filled from the bucket's start
    assert sum(len(b) for b in batches) == 12 + 8 and len({i for b in a for i in b}) == 10
    assert sampler.epoch_batches(0) == BucketBatchSampler(idx, seed=3).epoch_batches(0)
    assert sampler.epoch_batches(1) != batches
    dropped = BucketBatchSampler(idx, drop_last=True).epoch_batches(0)
    assert sum(len(b) for b in dropped) == 8 + 6


def test_global_batches_do_not_depend_on_the_number_of_processes():
    idx = index({"a": (5, 4), "b": (3, 2)})
    whole = list(itertools.islice(iter(BucketBatchSampler(idx, seed=0)), 8))
    parts = [list(itertools.islice(iter(BucketBatchSampler(idx, seed=0, rank=r, world_size=2)), 8)) for r in (0, 1)]
    assert [sorted(p0 + p1) for p0, p1 in zip(*parts, strict=True)] == [sorted(b) for b in whole]
    assert all(len(p) == len(b) // 2 for p, b in zip(parts[0], whole, strict=True))
    with pytest.raises(ValueError, match="below the 3 data-parallel processes"):
        BucketBatchSampler(idx, world_size=3)


def test_resume_from_consumed_batches_continues_exactly():
    idx = index({"a": (9, 2), "b": (5, 1)})
    straight = list(itertools.islice(iter(BucketBatchSampler(idx, seed=1)), 30))
    resumed = BucketBatchSampler(idx, seed=1)
    resumed.set_consumed(11)  # crosses into the second epoch (10 batches per epoch)
    assert list(itertools.islice(iter(resumed), 14)) == straight[11:25]
    state = resumed.state_dict()
    again = BucketBatchSampler(idx, seed=1)
    again.load_state_dict(state)
    assert list(itertools.islice(iter(again), 5)) == straight[25:30]
    with pytest.raises(ValueError, match="seed"):
        BucketBatchSampler(idx, seed=2).load_state_dict(state)


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 4)])
def test_a_resume_on_another_number_of_processes_sees_each_sample_of_the_epoch_once(before, after):
    """Batches consumed on `before` processes, the rest of the epoch on `after`: together, every global batch of
    the epoch once, in order, and each split over the processes without overlap."""
    idx = index({"a": (16, 4), "b": (8, 4)})
    epoch = BucketBatchSampler(idx, seed=5).epoch_batches(0)
    consumed = 3

    def taken(world: int, start: int, count: int) -> list[list[int]]:
        per_rank = []
        for rank in range(world):
            sampler = BucketBatchSampler(idx, seed=5, rank=rank, world_size=world)
            sampler.set_consumed(start)
            per_rank.append(list(itertools.islice(iter(sampler), count)))
        assert all(
            not set(a) & set(b) for k in range(count) for a, b in itertools.combinations([r[k] for r in per_rank], 2)
        )
        return [sorted(i for r in per_rank for i in r[k]) for k in range(count)]

    seen = taken(before, 0, consumed) + taken(after, consumed, len(epoch) - consumed)
    assert seen == [sorted(b) for b in epoch]
    assert sorted(i for b in seen for i in b) == list(range(24))  # every sample once


def test_ranks_split_each_global_batch():
    idx = index({"a": (12, 4)})
    whole = list(itertools.islice(iter(BucketBatchSampler(idx, seed=0)), 3))
    parts = [list(itertools.islice(iter(BucketBatchSampler(idx, seed=0, rank=r, world_size=2)), 3)) for r in (0, 1)]
    for k in range(3):
        assert sorted(parts[0][k] + parts[1][k]) == sorted(whole[k])


def test_dataset_reads_shards_and_collate_pads_text(tmp_path):
    save_file(
        {"x.latent": torch.ones(4, 2, 3, 3), "x.text": torch.ones(3, 8), "y.latent": torch.zeros(4, 2, 3, 3),
         "y.text": torch.zeros(0, 8)},
        tmp_path / "shard-00000.safetensors",
    )  # fmt: skip
    pd.DataFrame(
        [
            {"clip_id": "x", "bucket": "b", "batch_size": 2, "split": "train", "shard": "shard-00000.safetensors"},
            {"clip_id": "y", "bucket": "b", "batch_size": 2, "split": "train", "shard": "shard-00000.safetensors"},
        ]
    ).to_parquet(tmp_path / "index.parquet")
    data = LatentDataset(tmp_path)
    batch = collate([data[0], data[1]])
    assert batch["latent"].shape == (2, 4, 2, 3, 3)
    assert batch["text"].shape == (2, 3, 8) and batch["text_mask"].sum(1).tolist() == [3, 1]
    with pytest.raises(ValueError, match="not a precompute folder"):
        LatentDataset(tmp_path / "missing")


def test_a_per_gpu_bucket_preset_gives_global_batch_sizes():
    from components.train.data import preset_batch_sizes

    idx = pd.DataFrame(
        [
            {"bucket": "240p-1f-240x426", "resolution": "240p", "num_frames": 1},
            {"bucket": "240p-16f-240x426", "resolution": "240p", "num_frames": 16},
        ]
    )
    preset = yaml.safe_load((ROOT / "configs" / "buckets" / "80gb.yaml").read_text())
    sizes = preset_batch_sizes(idx, preset, data_parallel=8)
    assert sizes == {"240p-1f-240x426": preset["240p"]["1"][1] * 8, "240p-16f-240x426": preset["240p"]["16"][1] * 8}
    with pytest.raises(ValueError, match=r"\['240p-16f-240x426'\] have no batch size"):
        preset_batch_sizes(idx, {"240p": {1: [1.0, 4]}}, data_parallel=1)
