"""`t2v pipeline run` stopped by SIGTERM (a closed terminal, an evicted pod): every task it started ends with it,
it says which task it stopped and where the training checkpoint is, and `--resume` goes on from that checkpoint.
The run is the session's shared one (tests/runs.py): stopped in stage 1, then resumed to the end."""

import json
import signal

import pytest

from pipelines.cli import resume_target


@pytest.mark.slow
def test_sigterm_ends_every_task_names_the_checkpoint_and_resume_goes_on_from_it(stopped_run):
    run, output = stopped_run, stopped_run.stopped_output
    assert run.stopped_status == 128 + signal.SIGTERM, output
    assert run.started  # the task processes kfp.local runs
    assert run.orphans == []  # no task goes on training as an orphan
    assert 0 < run.step < 600, output
    assert "stopped by SIGTERM: ended train-stage-1" in output, output
    assert f"latest training checkpoint: {run.checkpoint} (step {run.step})" in output
    assert f"--resume {run.run}" in output

    # the second run goes on from that checkpoint (a few steps more) and finishes the DAG
    assert run.status == 0, run.shown[-3000:]
    state = json.loads((run.root / "work" / run.run / "stage1" / "export" / "train_state.json").read_text())
    assert state["resumed_from"] == run.step and state["steps"] == run.stage1_steps
    assert resume_target(run.root / "work", "last") == run.run


def test_resume_names_what_exists_when_the_run_is_not_there(tmp_path):
    (tmp_path / "run-a" / "stage1" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"--resume run-b: .* there are \['run-a'\]"):
        resume_target(tmp_path, "run-b")
    with pytest.raises(ValueError, match="no training checkpoint"):
        resume_target(tmp_path, "last")  # a folder without a complete checkpoint
    assert resume_target(tmp_path, "run-a") == "run-a"
