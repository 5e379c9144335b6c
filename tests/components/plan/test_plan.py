"""`t2v plan`: a schedule file is the plan step's settings file, read by the one settings loader; the plan of
Open-Sora 1.0's schedule, printed."""

from pathlib import Path

import pytest
import yaml

from components.common import settings
from components.plan.plan import PlanSettings, load_schedule
from model.planning.gpus import gpu
from model.planning.info import preset_arch
from model.planning.plan import ModelSpec, Stage, calibrate_mfu, plan
from t2v.cli import main

ROOT = Path(__file__).resolve().parents[3]
ONE_STAGE = "stages: [{name: a, frames: 1, height: 256, width: 256, batch: 1, steps: 1}]\n"


def test_plan_verb_prints_the_stages(capsys):
    args = ["plan", "--config", str(ROOT / "configs/plan/opensora-1.0.yaml"), "--gpu", "h800", "--num-gpus", "64",
            "--calibrate", "video-pretrain=117", "--throughput", "7.0"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    path = ROOT / "configs/plan/opensora-1.0.yaml"
    first = yaml.safe_load(path.read_text())["stages"][0]
    days = first["steps"] * first["batch"] / 7.0 / 86400  # samples seen at 7 samples/s/GPU
    schedule = load_schedule(path)
    mfu = calibrate_mfu(schedule, schedule.stages[0], gpu("h800"), 117)
    assert f"at MFU {mfu:.3f} (calibrated on video-pretrain = 117 GPU-days)" in out
    assert "hq-highres" in out and "total" in out
    assert f"at 7 samples/s/GPU, video-pretrain takes {days:.1f} GPU-days" in out
    assert main([*args[:-4], "--calibrate", "nope"]) == 2
    assert "expected STAGE=GPU_DAYS" in capsys.readouterr().err


def test_without_an_mfu_the_plan_uses_the_measured_one_and_names_its_source(capsys):
    from model.planning.plan import MEASURED_MFU, MEASURED_MFU_SOURCE

    path = ROOT / "configs/plan/opensora-1.0.yaml"
    assert main(["plan", "--config", str(path), "--gpu", "h200", "--num-gpus", "64"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"at MFU {MEASURED_MFU:.3f} (measured: {' '.join(MEASURED_MFU_SOURCE.split())})" in out
    schedule = load_schedule(path)
    at_default = plan(schedule, gpu("h200"), num_gpus=64, mfu=MEASURED_MFU, price_per_hour=2.5)
    at_double = plan(schedule, gpu("h200"), num_gpus=64, mfu=2 * MEASURED_MFU, price_per_hour=2.5)
    assert [p.dollars for p in at_double] == pytest.approx([p.dollars / 2 for p in at_default])  # a faster step pays
    assert f"{sum(p.gpu_hours for p in at_default):,.0f}" in out
    # the recompute column: every block recomputing adds one forward to the three of a training step
    assert all(p.recompute_flops_per_sample / p.flops_per_sample == pytest.approx(4 / 3) for p in at_default)


def test_a_schedule_with_unknown_keys_wrong_types_or_no_stages_is_refused_by_name(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - {name: s1, frames: 16, height: 256, width: 256, batch: 8, step: 10}\n")
    with pytest.raises(ValueError, match=r"PlanSettings\.stages\[0\]: unknown keys \['step'\]"):
        load_schedule(bad)
    bad.write_text("modle: {preset: XL/2}\n" + ONE_STAGE)
    with pytest.raises(ValueError, match=r"PlanSettings: unknown keys \['modle'\]"):
        load_schedule(bad)
    bad.write_text("model: {preset: XL/2, outchannels: 8}\n" + ONE_STAGE)
    with pytest.raises(ValueError, match=r"PlanSettings\.model: unknown keys \['outchannels'\]"):
        load_schedule(bad)
    bad.write_text("stages: [{name: a, frames: 1, height: 256, width: 256, batch: many, steps: 1}]\n")
    with pytest.raises(ValueError, match=r"PlanSettings\.stages\[0\]\.batch='many': expected int"):
        load_schedule(bad)
    bad.write_text("stages: []\n")
    with pytest.raises(ValueError, match=r"needs stages: give a schedule file \(--config configs/plan/"):
        load_schedule(bad)
    assert main(["plan", "--gpu", "h100"]) == 2  # no schedule: one line naming the fix
    assert "give a schedule file (--config" in capsys.readouterr().err


def test_a_schedule_is_a_settings_file_flags_and_overrides_go_on_top(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("gpu: h800\nnum_gpus: 8\n" + ONE_STAGE)
    assert load_schedule(path).num_gpus == 8 and load_schedule(path).model == ModelSpec()
    cfg = load_schedule(path, "model.text_tokens=300", "vae_factor=16", "num_gpus=16")
    assert (cfg.model.text_tokens, cfg.vae_factor, cfg.num_gpus, cfg.gpu) == (300, 16, 16, "h800")
    assert cfg.arch() == preset_arch("XL/2", text_tokens=300)
    assert load_schedule(tmp_path / "s.yaml").stages == (Stage("a", 1, 256, 256, 1, steps=1),)
    assert settings.build(PlanSettings, settings.to_dict(cfg)) == cfg  # written out and read back whole
    assert main(["plan", "--config", str(path), "--mfu", "0.4", "--num-gpus", "4", "--model.text-tokens", "300"]) == 0
    assert "4 x NVIDIA H800" in capsys.readouterr().out


def test_the_shipped_schedules_state_only_what_differs_from_the_defaults():
    defaults = settings.defaults(PlanSettings)
    for path in (ROOT / "configs/plan").glob("*.yaml"):
        stated = yaml.safe_load(path.read_text())
        flat = {f"{k}.{s}" if isinstance(v, dict) else k: (w if isinstance(v, dict) else v)
                for k, v in stated.items() for s, w in (v.items() if isinstance(v, dict) else [(None, v)])}  # fmt: skip
        assert [k for k, v in flat.items() if k in defaults and defaults[k] == v] == [], path
        load_schedule(path)


def test_the_plan_sizes_the_data_steps_with_the_rates_it_names(capsys):
    """Open-Sora 1.0's footage through ingest on the CPU cores, each stage's clips through precompute on the GPUs:
    the figures are model.planning.data's, and the output says where each rate comes from."""
    from model.planning.data import (
        ENCODE_MFU,
        ENCODE_MFU_SOURCE,
        MEASURED_INGEST_RATE,
        MEASURED_INGEST_SOURCE,
        data_plan,
    )

    path = ROOT / "configs/plan/opensora-1.0.yaml"
    assert main(["plan", "--config", str(path), "--gpu", "h800", "--num-gpus", "64", "--cpu-cores", "512"]) == 0
    out = capsys.readouterr().out
    schedule = load_schedule(path)
    stages = [(s.name, s.samples, s.frames, s.height, s.width) for s in schedule.stages]
    data = data_plan(stages, footage_hours=schedule.footage_hours, text_tokens=120, gpu=gpu("h800"), num_gpus=64,
                     cores=512)  # fmt: skip
    assert schedule.footage_hours == 1000 and data.ingest_core_hours == 1000 / MEASURED_INGEST_RATE
    assert f"{data.ingest_core_hours:,.1f} core-h" in out and f"{data.ingest_hours:,.2f}" in out
    for name, (clips, hours) in data.encode.items():
        row = next(line for line in out.splitlines() if f"precompute {name} " in line)
        assert f"{clips:,} clips" in row and f"{hours:,.1f} GPU-h" in row and f"MFU {ENCODE_MFU:.2f}" in row
    assert f"ingest rate: measured: {MEASURED_INGEST_SOURCE}; encoding MFU: {ENCODE_MFU_SOURCE}" in out
    assert main(["plan", "--config", str(path), "--num-gpus", "64", "--ingest-rate", "4", "--encode-mfu", "0.5"]) == 0
    assert "ingest rate: stated; encoding MFU: stated" in capsys.readouterr().out
