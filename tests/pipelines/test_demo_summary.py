"""What `make demo` prints at its end, from the evaluation's metrics."""

import json

from pipelines.demo import summary


def test_the_summary_shows_held_out_seen_and_two_shape_adherence_apart(tmp_path):
    metrics = {"val_loss": 0.1, "adherence/colour": 1.0, "adherence/shape": 0.75}
    for group, shape in (("held_out", 0.5), ("seen", 1.0)):
        metrics |= {f"adherence/{group}/colour": 1.0, f"adherence/{group}/shape": shape,
                    f"adherence/{group}/mean": (1 + shape) / 2, f"adherence/{group}/prompts": 48.0}  # fmt: skip
    metrics |= {"adherence/pairs/objects": 0.75, "adherence/pairs/both": 0.5, "adherence/pairs/prompts": 48.0}
    result = {"metrics": metrics, "data": {"val_samples": 16}, "samples": [{}] * 96}
    (tmp_path / "metrics.json").write_text(json.dumps(result))
    lines = summary(evaluation=tmp_path, decision_path=tmp_path / "none.json").splitlines()
    assert "prompt adherence over 96 prompts: colour 100% (chance 25%), shape 75% (chance 33%)" in lines
    assert "  combinations no training clip shows (48 prompts): colour 100%, shape 50%" in lines
    assert "  combinations it saw (48 prompts): colour 100%, shape 100%" in lines
    assert "  two-shape prompts (48): 75% of the shapes right, both right in 50%" in lines
