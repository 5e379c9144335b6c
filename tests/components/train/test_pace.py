"""A stage that runs far slower than its recipe measured says so, with the machine's load and thread counts."""

import logging

from components.train.pace import PACE_FILE, Pace, slow_note
from components.train.stage import outcome
from components.train.train import train
from tests.components.conftest import toy_stage_config


def test_the_median_of_the_last_windows_is_judged_and_said_once(tmp_path):
    pace = Pace(1000.0, 3.0, 2, tmp_path)
    assert pace.observe(10, 50.0, first_step=10) == ""  # the first window: warm-up, not judged
    for step, rate in ((20, 1000.0), (30, 100.0), (40, 1000.0)):  # one window held a validation: not slow
        assert pace.observe(step, rate, first_step=10) == ""
    said = pace.observe(50, 250.0, first_step=10)  # the median of the last three: 250, under a third of 1000
    assert said.startswith("stage 2 runs 4.0x slower than its recipe measured (250 tokens/s, expected 1000)")
    assert "load average" in said and "torch threads" in said and "OMP_NUM_THREADS" in said
    assert slow_note(tmp_path) == said and pace.observe(80, 10.0, first_step=10) == said  # said once
    assert Pace(None, 3.0, 1, tmp_path / "x").observe(20, 1.0, first_step=10) == ""  # nothing to compare with


def test_a_slow_stage_says_so_in_its_log_and_its_task_line(toy_data, tmp_path, caplog):
    settings = ["max_steps=8", "log_every=1", "val_every=0", "ckpt_every=0", "sample_every=0",
                "expected_tokens_per_s=1e12"]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="components.train.pace"):
        result = train(toy_stage_config(toy_data, tmp_path / "run", 1, *settings))
    assert (result.out_dir / PACE_FILE).exists() and "slower than its recipe measured" in caplog.text
    assert "slower than its recipe measured" in outcome(result.out_dir)
    fast = train(toy_stage_config(toy_data, tmp_path / "fast", 1, *settings[:-1], "expected_tokens_per_s=1"))
    assert not (fast.out_dir / PACE_FILE).exists() and "slower" not in outcome(fast.out_dir)
