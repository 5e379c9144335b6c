"""`t2v pipeline run` stopped by SIGTERM (a closed terminal, an evicted pod): every task it started ends with it,
it says which task it stopped and where the training checkpoint is, and `--resume` goes on from that checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipelines.cli import latest_checkpoint, resume_target

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["synth.videos=8", "synth.images=4", "stage2.max_steps=2", "stage3.max_steps=2", "evaluate.max_prompts=2",
         "evaluate.steps=2", "train.ckpt_every=10", "train.val_every=0"]  # fmt: skip


def t2v(root: Path, *args: str) -> list[str]:
    command = [sys.executable, "-m", "t2v", "pipeline", "run", "--root", str(root)]
    for item in args:
        command += ["--set", item] if "=" in item else [item]
    return command


@pytest.mark.slow
def test_sigterm_ends_every_task_names_the_checkpoint_and_resume_goes_on_from_it(tmp_path):
    root = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(t2v(root, *SMALL, "stage1.max_steps=600"), cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while latest_checkpoint(root / "work") is None:
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "no training checkpoint in time"
            time.sleep(0.5)
        started = psutil.Process(first.pid).children(recursive=True)
        assert started  # the task processes kfp.local runs
        os.kill(first.pid, signal.SIGTERM)  # the run's own process only, as a pod eviction or `kill` sends it
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 128 + signal.SIGTERM, output
    still = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not still, [p.cmdline() for p in still]  # no task goes on training as an orphan
    run, folder, step = latest_checkpoint(root / "work")
    assert "stopped by SIGTERM: ended train-stage-1" in output, output
    assert f"latest training checkpoint: {folder} (step {step})" in output
    assert f"--resume {run}" in output and resume_target(root / "work", "last") == run

    # the second run goes on from that checkpoint (a few steps more) and finishes the DAG
    resumed = subprocess.run(t2v(root, *SMALL, f"stage1.max_steps={step + 4}", "--resume", run), cwd=ROOT, env=env,
                             text=True, capture_output=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    state = json.loads((root / "work" / run / "stage1" / "export" / "train_state.json").read_text())
    assert state["resumed_from"] == step and state["steps"] == step + 4


def test_resume_names_what_exists_when_the_run_is_not_there(tmp_path):
    (tmp_path / "run-a" / "stage1" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"--resume run-b: .* there are \['run-a'\]"):
        resume_target(tmp_path, "run-b")
    with pytest.raises(ValueError, match="no training checkpoint"):
        resume_target(tmp_path, "last")  # a folder without a complete checkpoint
    assert resume_target(tmp_path, "run-a") == "run-a"
