import subprocess
import sys
from pathlib import Path

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


def test_model_verb_reports_open_sora_xl2(capsys):
    assert main(["model", "--preset", "XL/2", "--frames", "64", "--size", "512", "512"]) == 0
    out = capsys.readouterr().out
    assert "760.2" in out and "148.9" in out  # parameters: total and temporal, in millions
    assert "6.37" in out  # full attention / STDiT training FLOPs at 64 x 512 px


def test_bad_input_is_a_clear_error_not_a_traceback(capsys):
    assert main(["model", "--size", "250", "256"]) == 2
    assert "divisible by the VAE factor 8" in capsys.readouterr().err
