"""Checkpoints hold tensors and JSON only: nothing read back from the shared volume is unpickled."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from components.train import checkpoint
from components.train.checkpoint import UnsafeCheckpoint, load_checkpoint, load_rng, save_rng
from components.train.train import train
from tests.components.conftest import toy_stage_config


class Planted:
    """What an attacker with write access to the volume would save: unpickling it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(), random.random()


def test_random_states_come_back_from_safetensors_and_json(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # numpy now holds a cached gaussian, part of its state
    save_rng(tmp_path)
    expected = draws()
    draws()
    load_rng(tmp_path)
    assert draws() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rng.json", "rng.safetensors"]


def test_a_checkpoint_of_the_earlier_pickled_format_is_refused_before_anything_loads(tmp_path):
    marker = tmp_path / "unpickled"
    torch.save({"python": Planted(marker)}, tmp_path / "rng.pt")
    with pytest.raises(UnsafeCheckpoint, match=r"earlier version.*rng\.pt.*not loaded.*resume=none"):
        load_checkpoint(tmp_path, booster=None, model=None, optimizer=None, scheduler=None, ema=None)
    assert not marker.exists()


def test_a_planted_pickle_is_refused_with_the_file_named_and_resume_still_works(toy_data, tmp_path):
    out = tmp_path / "run"
    first = train(toy_stage_config(toy_data, out, 1, "max_steps=3", "ckpt_every=3", "val_every=0"))
    folder = checkpoint.step_dir(out / "checkpoints", 3)
    assert sorted(p.name for p in folder.iterdir()) == [
        "COMPLETE", "ema.safetensors", "model.pt", "optimizer.pt", "rng.json", "rng.safetensors", "scheduler.json",
        "state.json",
    ]  # fmt: skip
    assert first.losses
    marker = tmp_path / "unpickled"
    genuine = (folder / "optimizer.pt").read_bytes()
    state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    state["planted"] = Planted(marker)
    torch.save(state, folder / "optimizer.pt")

    again = toy_stage_config(toy_data, out, 1, "max_steps=5", "ckpt_every=5", "val_every=0")
    with pytest.raises(UnsafeCheckpoint, match=r"optimizer\.pt is not a tensors-only torch file.*was not loaded"):
        train(again)
    assert not marker.exists()  # refused without unpickling it

    (folder / "optimizer.pt").write_bytes(genuine)
    resumed = train(again)
    assert resumed.resumed_from == 3 and len(resumed.losses) == 2
    assert checkpoint.latest(out / "checkpoints") == checkpoint.step_dir(out / "checkpoints", 5)
