"""NaN and loss-spike handling: bad steps are skipped; K bad steps in a row roll back to the last checkpoint."""

import logging
import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from components.common.tracking import read_metrics_log
from components.train.config import GuardConfig
from components.train.guard import Guard
from components.train.train import train
from tests.components.conftest import toy_stage_config

COMMON = [
    "optim.warmup_steps=1",
    "log_every=1",
    "val_every=0",
    "sample_every=0",
    "system_metrics_every=0",
    "num_workers=0",
]


def guard_run(data, tmp_path, *settings):
    db = tmp_path / "mlflow.db"
    cfg = toy_stage_config(data, tmp_path / "out", 1, *COMMON, f"tracking_uri=sqlite:///{db}", *settings)
    result = train(cfg)
    client = MlflowClient(f"sqlite:///{db}")
    history = {
        key: [(m.step, m.value) for m in sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)]
        for key in ("guard/skipped_steps", "guard/rollbacks", "guard/lr_scale", "loss", "lr")
    }
    return result, history, read_metrics_log(tmp_path / "out" / "metrics.jsonl")


def test_a_planted_nan_is_skipped_and_counted(toy_data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="components.train.train"):
        result, history, log = guard_run(toy_data, tmp_path, "max_steps=8", "ckpt_every=8", "guard.plant={4: nan}")
    assert "step 4 skipped: non-finite" in caplog.text
    assert history["guard/skipped_steps"] == [(4, 1.0)] and history["guard/rollbacks"] == [(4, 0.0)]
    assert len(result.losses) == 7 and all(math.isfinite(x) for x in result.losses)  # 8 steps, one skipped
    assert log[4]["guard/skipped_steps"] == 1 and all(math.isfinite(m["loss"]) for m in log.values() if "loss" in m)
    weights = torch.load(tmp_path / "out" / "checkpoints" / "step-00000008" / "model.pt", map_location="cpu")
    assert weights and all(torch.isfinite(v).all() for v in weights.values())


def test_a_skipped_step_does_not_advance_the_learning_rate_schedule(toy_data, tmp_path):
    _, history, _ = guard_run(toy_data, tmp_path, "max_steps=5", "ckpt_every=5", "optim.warmup_steps=8",
                              "guard.plant={3: nan}")  # fmt: skip
    lr = dict(history["lr"])
    assert lr[1] < lr[2] == lr[3] < lr[4] < lr[5]  # warmup counts applied steps: step 3 moved nothing
    assert lr[5] == pytest.approx(lr[1] * 5 / 2)  # (applied steps + 1) / warmup: 2/8 after step 1, 5/8 after 5


def test_k_planted_spikes_roll_back_to_the_last_checkpoint_and_lower_the_learning_rate(toy_data, tmp_path, caplog):
    settings = [
        "max_steps=16",
        "ckpt_every=8",
        "guard.window=4",
        "guard.max_bad_steps=3",
        "guard.lr_factor=0.5",
        "guard.plant={11: spike, 12: spike, 13: spike}",
    ]
    with caplog.at_level(logging.WARNING, logger="components.train.train"):
        result, history, log = guard_run(toy_data, tmp_path, *settings)
    assert "3 bad steps in a row at step 13: rolled back to step-00000008 (step 8), learning rate x0.5" in caplog.text
    assert [v for _, v in history["guard/skipped_steps"]][-1] == 3.0
    assert history["guard/rollbacks"][-1] == (13, 1.0) and history["guard/lr_scale"][-1] == (13, 0.5)
    # steps 9..16 ran again after the rollback, at half the learning rate (warmup is over: lr is constant)
    lr = dict(history["lr"])
    assert lr[8] == pytest.approx(1e-3) and lr[16] == pytest.approx(5e-4)
    assert result.steps == 16 and len(result.losses) == 8 + 2 + 8  # steps 1-8, 9-10, then 9-16 again
    assert log[16]["lr"] == pytest.approx(5e-4)


def test_too_many_rollbacks_stop_the_run_with_its_checkpoints(toy_data, tmp_path):
    settings = ["max_steps=12", "ckpt_every=4", "guard.window=2", "guard.max_bad_steps=1", "guard.max_rollbacks=1",
                "guard.plant={6: nan, 7: nan}"]  # fmt: skip
    with pytest.raises(RuntimeError, match="after 1 rollbacks"):
        guard_run(toy_data, tmp_path, *settings)
    assert (tmp_path / "out" / "checkpoints" / "step-00000004" / "COMPLETE").exists()


def test_spike_detection_waits_for_a_full_window():
    guard = Guard(GuardConfig(spike_factor=2.0, window=3))
    assert [guard.check(x, 1.0) for x in (1.0, 5.0, 1.0, 1.0)] == ["ok"] * 4  # window not full before the 4th
    assert guard.check(3.0, 1.0) == "spike" and guard.check(1.5, 1.0) == "ok"
    assert guard.check(1.0, float("inf")) == "non-finite" and guard.check(1.0, None) == "ok"
    assert guard.skipped == 2 and guard.state()["good"] == [1.0, 1.5, 1.0]
