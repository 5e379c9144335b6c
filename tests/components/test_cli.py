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

    from model.networks.stdit import STDiT, preset_config

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
