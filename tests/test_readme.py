"""The README's figures, each recomputed from the code, test or benchmark that measures it."""

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = " ".join((ROOT / "README.md").read_text().split())  # one line: figures may sit across a line break


def test_the_plan_figures_are_the_planners():
    from components.plan.plan import load_schedule
    from model.planning.gpus import gpu
    from model.planning.plan import calibrate_mfu, plan

    schedule = load_schedule(ROOT / "configs/plan/opensora-1.0.yaml")
    h800 = gpu("h800")
    mfu = calibrate_mfu(schedule, schedule.stages[0], h800, 117)
    stages = plan(schedule, h800, num_gpus=64, mfu=mfu, price_per_hour=2.5)
    days = [p.gpu_hours / 24 for p in stages]
    dollars = sum(p.dollars for p in stages)
    expected = (
        f"calibrates the MFU on Open-Sora 1.0's first stage ({mfu:.3f}) and predicts its other two stages at "
        f"{days[1]:.1f} and {days[2]:.1f} GPU-days (published: 45 and 35), about ${dollars / 1000:.0f}k in all at "
        "$2.5 per GPU-hour"
    )
    assert expected in README
    from model.planning.plan import MEASURED_MFU

    default = plan(schedule, gpu("h200"), num_gpus=64, mfu=MEASURED_MFU, price_per_hour=2.5)
    measured = (
        f"{MEASURED_MFU:.3f} on one H200, so the same schedule takes {sum(p.gpu_hours for p in default) / 24:.1f} "
        f"GPU-days on 64 H200s, about ${sum(p.dollars for p in default) / 1000:.0f}k"
    )
    assert measured in README


def test_the_xl2_parameter_counts_are_the_networks():
    from model.networks.presets import preset_config
    from model.networks.stdit import STDiT

    config = preset_config("XL/2", in_channels=4, out_channels=8, caption_channels=4096, caption_max_length=120)
    with torch.device("meta"):
        model = STDiT(**config)
    total = sum(p.numel() for p in model.parameters())
    temporal_attention = sum(p.numel() for n, p in model.named_parameters() if ".attn_temp." in n)
    null_caption = model.y_embedding.numel()
    pixart_part = total - sum(p.numel() for _, p in model.temporal_parameters()) - null_caption
    expected = (
        f"`XL/2` has {total / 1e6:.1f}M parameters: {pixart_part / 1e6:.1f}M in the PixArt-compatible part, "
        f"{temporal_attention / 1e6:.1f}M in temporal attention, {null_caption / 1e6:.1f}M in the learned null caption"
    )
    assert expected in README


def test_the_attention_ratio_is_the_benchmarks_analytic_figure():
    from model.planning.info import summarize

    (row,) = summarize(["XL/2"], frames=64, height=512, width=512)
    assert f"STDiT-XL/2 at 64 frames x 512 px ({row['full_over_stdit']:.1f}x; Open-Sora measured 5x)" in README


def test_the_gpu_benchmarks_targets_are_its_own():
    from benchmarks.gpu import FULL_OVER_STDIT_TARGET, MEMORY_TOLERANCE, MFU_TARGET, MFU_TARGET_256

    assert f"target {MFU_TARGET:.0%} at 512 px and {MFU_TARGET_256:.0%} at 256 px" in README
    assert f"`torch.cuda.max_memory_allocated` per row (within {MEMORY_TOLERANCE:.0%})" in README
    assert f"(target {FULL_OVER_STDIT_TARGET:.0f}x)" in README


@pytest.mark.parametrize(
    "claim, test, pattern",
    [
        ("1 vs 2 processes within 1e-5", "tests/components/train/test_distributed.py",
         r'"1 vs 2 processes, 6 steps: .*"\)\n\s+assert loss_diff < 1e-5 and weight_diff < 1e-5'),
        ("goal: the default mode at 90% or more of decode-only throughput", "benchmarks/ingest.py",
         r'"goal_rows_vs_decode_only": 0\.9,'),
        ("scores chance when the captions are shuffled (tests/components/evaluate/test_adherence.py, 212 clips)",
         "tests/components/evaluate/test_adherence.py", r"videos=200, images=12"),
    ],
)  # fmt: skip
def test_the_measured_claims_name_what_their_test_or_benchmark_holds(claim, test, pattern):
    assert claim in README
    assert re.search(pattern, (ROOT / test).read_text()), f"{test} no longer holds {claim!r}"


def test_the_demo_table_is_the_repro_evaluation():
    """The adherence table and the displacement sentence of the demo section are data/evaluate/metrics.json's."""
    import json

    metrics = json.loads((ROOT / "data" / "evaluate" / "metrics.json").read_text())["metrics"]
    for name in ("colour", "shape", "direction", "background"):
        row = re.search(rf"\| {name} +\| (\d+)% +\|", README)
        assert row, f"no {name} row in the README's demo table"
        assert int(row[1]) == round(100 * metrics[f"adherence/{name}"]), name
    moved, truth, ratio = (
        metrics[f"adherence/{k}"] for k in ("displacement", "displacement_truth", "displacement_ratio")
    )
    assert f"travel {moved:.1f} px per clip in the direction asked, against {truth:.1f} px" in README
    assert f"(ratio {ratio:.2f}," in README
