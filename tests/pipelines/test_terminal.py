"""What the terminal shows while a run's output goes to its log: tasks as real processes that report through
components.common.events and print to their inherited stdout and stderr, as kfp.local's tasks do."""

import io
import re
import subprocess
import sys
from pathlib import Path

from pipelines.terminal import RunLog

ROOT = Path(__file__).resolve().parents[2]
TASK = """
import os, signal, sys
from components.common.events import Steps, task

name, outcome = sys.argv[1:]
print("noise on stdout", flush=True)
print("noise on stderr", file=sys.stderr, flush=True)
with task(name) as report:
    steps = Steps(3, every=0)
    for done in (1, 2, 3):
        steps.update(done, 0.5)
    if outcome == "killed":
        print("last words before the kill", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    report.figure = "3 steps, final loss 0.5000"
"""


def run_task(name: str, outcome: str) -> int:
    return subprocess.run([sys.executable, "-c", TASK, name, outcome], cwd=ROOT).returncode


def test_the_terminal_shows_each_task_and_the_log_takes_everything_else(tmp_path):
    terminal = io.StringIO()
    with RunLog(tmp_path, terminal=terminal, poll_s=0.05) as log:
        assert run_task("train-stage-1", "ok") == 0
        run_task("caption-shard-0", "ok")
        import os

        os.write(2, b"the runner's own stderr\n")
        log.finished()
    shown = terminal.getvalue().splitlines()
    assert shown[0] == f"log: {log.path}" and log.path.parent == tmp_path / "logs"
    assert shown[1:3] == ["  start  train-stage-1", shown[2]]
    assert re.fullmatch(r"  done   train-stage-1 +\d+\.\d s  3 steps, final loss 0\.5000", shown[2]), shown[2]
    assert shown[3] == "  start  caption-shard-0" and shown[4].startswith("  done   caption-shard-0")
    assert re.fullmatch(r"finished in \d+ s", shown[5]) and len(shown) == 6  # no bar in a file: it is no terminal
    text = log.path.read_text()
    assert text.count("noise on stdout") == 2 and text.count("noise on stderr") == 2
    assert "the runner's own stderr" in text and "noise" not in terminal.getvalue()


def test_a_task_killed_without_a_word_is_named_with_the_last_lines_of_the_log(tmp_path):
    terminal = io.StringIO()
    with RunLog(tmp_path, terminal=terminal, poll_s=0.05) as log:
        assert run_task("train-stage-2", "killed") < 0
        log.fail(RuntimeError("Pipeline \x1b[95m't2v-pipeline'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m."))
    shown = terminal.getvalue()
    assert "failed: train-stage-2: Pipeline 't2v-pipeline' finished with status FAILURE." in shown
    assert f"last lines of {log.path}:\n" in shown and "    last words before the kill\n" in shown
    assert shown.endswith(f"the whole output: {log.path}\n")
    assert "RuntimeError: Pipeline" in log.path.read_text()  # the traceback is in the log
