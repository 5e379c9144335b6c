import json

import numpy as np
import pytest

from components.demo import COLOURS, DemoConfig, captions, judge, run_demo, toy_clip


@pytest.mark.parametrize(("colour", "direction"), captions())
def test_judge_reads_the_true_clips(colour, direction):
    clip = toy_clip(colour, direction, frames=8, size=16, square=6)
    assert clip.shape == (3, 8, 16, 16) and clip.min() >= -1 and clip.max() <= 1
    assert judge(clip) == (colour, direction)


def test_judge_is_not_fooled_by_noise():
    rng = np.random.default_rng(0)
    verdicts = {judge(rng.uniform(-1, 1, (3, 8, 16, 16)).astype(np.float32))[0] for _ in range(20)}
    assert len(verdicts) > 1 and verdicts <= set(COLOURS)


@pytest.mark.slow
def test_demo_trains_samples_and_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    metrics = run_demo(DemoConfig(output_dir=str(out), steps=40, sample_steps=4))
    assert metrics["loss_last_20"] < metrics["loss_first_20"]
    written = json.loads((out / "metrics.json").read_text())
    assert written["steps"] == 40 and 0 <= written["colour_accuracy"] <= 1
    assert (out / "loss.png").stat().st_size > 1000
    for name in written["samples"].values():
        assert (out / name).read_bytes()[:3] == b"GIF"
    run_demo(DemoConfig(output_dir=str(out), steps=2, sample_steps=1))  # re-runs replace the folder
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temporary folders left behind
