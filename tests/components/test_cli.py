import subprocess
import sys
from pathlib import Path

import pytest

from t2v.cli import main


def test_t2v_help_lists_the_verbs():
    t2v = Path(sys.executable).parent / "t2v"  # the console script installed beside this interpreter
    out = subprocess.run([str(t2v), "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: t2v" in out
    for verb in ("data", "ingest", "caption", "precompute", "train", "evaluate", "register", "generate", "pipeline"):
        assert verb in out


HEAVY = ("torch", "diffusers", "transformers", "mlflow", "colossalai", "kfp")


def test_the_command_lines_load_settings_not_libraries():
    """Every verb's parser (all its flags, from its settings) is built without the step's libraries: `t2v --help`
    and an argument error answer at once (benchmarks/cli.py times them); a verb loads them when it runs."""
    code = (
        "import sys; from t2v.cli import VERBS, build_parser; parser = build_parser(); "
        "verbs = parser._subparsers._group_actions[0].choices; "
        "print(sorted(v for v in VERBS if not verbs[v].description)); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    undeclared, loaded = out.splitlines()
    assert undeclared == "[]"  # each verb of the table is declared by its module, with its description
    assert loaded == "[]"


def test_every_file_the_help_cites_exists():
    import re

    from t2v.cli import EPILOG

    root = Path(__file__).resolve().parents[2]
    cited = re.findall(r"(?<![\w/])((?:configs|data)/[\w./-]+\.(?:yaml|txt)|params\.yaml)", EPILOG)
    assert cited and all((root / path).exists() for path in cited), cited


def test_python_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "t2v.cli", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("t2v ")


def attention_flops_ratio(frames: int, side: int, C: int = 1152, text_tokens: int = 120) -> float:
    """Full attention over STDiT, written out by hand per block (the embeddings and final layer cancel out to well
    under 0.1% at this size): full attention has one self-attention over all T*S tokens, STDiT a spatial one over
    S and a temporal one over T."""
    T, S, L = frames, (side // 8 // 2) ** 2, text_tokens
    N = T * S
    shared = 2 * (2 * C * C * N + 2 * C * C * L) + 4 * N * L * C + 2 * 8 * C * C * N  # cross-attention, MLP
    stdit = shared + 2 * 8 * C * C * N + 4 * T * S * S * C + 4 * S * T * T * C
    full = shared + 2 * 4 * C * C * N + 4 * N * N * C
    return full / stdit


def test_model_verb_reports_open_sora_xl2(capsys):
    import torch

    from model.networks.presets import preset_config
    from model.networks.stdit import STDiT

    assert main(["model", "--preset", "XL/2", "--frames", "64", "--size", "512", "512"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "XL/2" in line)
    params, temporal, stdit_tflops, full_tflops, ratio = (float(c) for c in row.strip(" │|").split("│")[1:])
    # the parameters of the network itself at Open-Sora 1.0's configuration (T5-XXL, 120 tokens, learned sigma)
    config = preset_config("XL/2", in_channels=4, out_channels=8, caption_channels=4096, caption_max_length=120)
    with torch.device("meta"):
        model = STDiT(**config)
    assert params == round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    assert temporal == round(sum(p.numel() for _, p in model.temporal_parameters()) / 1e6, 1)
    assert ratio == pytest.approx(attention_flops_ratio(64, 512), abs=0.01)
    assert ratio == pytest.approx(full_tflops / stdit_tflops, abs=0.01)


def test_bad_input_is_a_clear_error_not_a_traceback(capsys):
    assert main(["model", "--size", "250", "256"]) == 2
    assert "divisible by the VAE factor 8" in capsys.readouterr().err


def test_a_registry_uri_without_a_registry_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)  # what earlier tests set
    args = ["generate", "a red circle", "--model", "models:/t2v-stdit@champion", "--out", str(tmp_path / "v.mp4")]
    assert main(args) == 2
    shown = capsys.readouterr()
    assert "no registry is given: pass --tracking-uri URI or set MLFLOW_TRACKING_URI" in shown.out + shown.err
    assert list(tmp_path.iterdir()) == []  # no ./mlflow.db, no video


def test_ingest_of_a_folder_without_media_leaves_nothing_behind(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no video here\n")
    assert main(["ingest", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    shown = capsys.readouterr()
    assert "no video or image files found" in shown.out + shown.err
    assert not (tmp_path / "out").exists()


def test_tasks_that_only_lay_out_or_merge_files_load_no_encoder_libraries():
    """The precompute fan-out's listing and merging tasks and the ingest merge read manifests and move files: on a
    cluster each is a pod that should start in a second, not after loading torch (each pipeline run starts them)."""
    code = (
        "import sys; import components.precompute.stages, components.precompute.layout, components.ingest.shards; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
