"""After training: the plan for the schedule a run followed, next to what the run measured in MLflow."""

import pytest
import yaml

from components.plan.plan import load_schedule
from components.train.train import train
from model.planning.gpus import GPU
from model.planning.plan import compare_with_run, mlflow_measurements, plan
from t2v.cli import main
from tests.components.conftest import toy_stage_config


def test_the_plan_is_compared_with_a_training_run(toy_data, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = ["max_steps=12", "log_every=4", "val_every=0", "ckpt_every=0", "sample_every=0",
                "system_metrics_every=0", f"tracking_uri={db}"]  # fmt: skip
    result = train(toy_stage_config(toy_data, tmp_path / "out", 1, *settings))
    measured = mlflow_measurements(db, result.run_id)
    assert measured["tokens_per_s"] > 0 and measured["peak_memory_gb"] > 0 and measured["world_size"] == 1

    # the toy run's schedule: params.yaml's training model on 32 px stills in pixel space (none:4), batch 4
    schedule_file = tmp_path / "toy.yaml"
    schedule_file.write_text(yaml.safe_dump({
        "model": {"preset": "tiny", "text_tokens": 16, "in_channels": 48, "out_channels": 48, "caption_channels": 32,
                  "overrides": {"num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 16}},
        "vae_factor": 4, "gradient_checkpointing": False,
        "stages": [{"name": "stage1", "frames": 1, "height": 32, "width": 32, "batch": 4, "steps": 12}],
    }))  # fmt: skip
    schedule = load_schedule(schedule_file)
    cpu = GPU("this CPU (stated peak)", 0.05, 24)  # a stated peak: the comparison's plumbing, not a GPU's numbers
    (stage,) = plan(schedule, cpu, num_gpus=1, mfu=0.5, price_per_hour=0.0)
    report = compare_with_run(stage, measured, 1)
    assert report["tokens_per_s_per_gpu"]["measured"] == pytest.approx(measured["tokens_per_s"])
    assert report["tokens_per_s_per_gpu"]["plan"] == pytest.approx(stage.tokens_per_s_per_gpu)
    assert report["peak_memory_gb"]["ratio"] == pytest.approx(measured["peak_memory_gb"] / stage.memory_gb)

    args = ["plan", "--config", str(schedule_file), "--gpu", "h100", "--num-gpus", "1", "--mfu", "0.4",
            "--tracking-uri", db, "--run-id", result.run_id]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tokens_per_s_per_gpu: plan" in out and "peak_memory_gb: plan" in out
