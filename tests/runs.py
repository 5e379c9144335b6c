"""The whole DAG on a small toy world, run once per test session and read by every test of what a person running it
sees and keeps: `t2v pipeline run` stopped by SIGTERM once stage 1 has a checkpoint (as a closed terminal or an
evicted pod stops it), then `t2v pipeline run --resume` shown in a pseudo-terminal to the end.

tests/pipelines/test_stop.py reads the stop and the resume, tests/pipelines/test_kfp.py the terminal and the
registered version, tests/benchmarks the demo benchmark's figures of the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.demo import QUICK

ROOT = Path(__file__).resolve().parents[1]

# the toy recipe at the demo benchmark's --quick size, with a checkpoint every 10 steps to stop at
SMALL = [*QUICK, "train.ckpt_every=10"]
FIRST_STEPS = 600  # stage 1 of the run that is stopped: long enough to be stopped in its middle
MORE_STEPS = 4  # what the resumed stage 1 trains beyond its checkpoint


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def pipeline_run(root: Path, *items: str) -> list[str]:
    """`t2v pipeline run` under `root` with `key=value` items as --set and other items as they are."""
    command = [sys.executable, "-m", "t2v", "pipeline", "run", "--root", str(root)]
    for item in items:
        command += ["--set", item] if "=" in item else [item]
    return command


def in_terminal(command: list[str], timeout_s: float = 1200, columns: int = 100) -> tuple[str, int]:
    """Run `command` with a pseudo-terminal as its standard output and error, as `make demo` runs in a person's
    terminal: (everything it showed, with the terminal's line ends as newlines; its exit status)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    shown, deadline = bytearray(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 1.0)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other side closed: the command and its children are done
                break
            if not chunk:
                break
            shown += chunk
    else:
        process.kill()
    os.close(leader)
    return shown.decode(errors="replace").replace("\r\n", "\n"), process.wait(timeout=60)


@dataclass
class StoppedRun:
    """What the stopped run left and said, and what the terminal showed of its resumed run."""

    root: Path
    stopped_output: str  # everything the stopped run printed
    stopped_status: int
    started: list[str]  # the command lines of the task processes the stopped run had started
    orphans: list[str]  # those still running after it ended (none, if the stop ended every task)
    run: str  # the run id and the checkpoint it stopped at
    checkpoint: Path
    step: int
    settings: list[str]  # the resumed run's --set items
    shown: str  # what the terminal showed of the resumed run
    status: int  # its exit status

    @property
    def stage1_steps(self) -> int:
        return self.step + MORE_STEPS


def stop_then_resume(root: Path) -> StoppedRun:
    from pipelines.cli import latest_checkpoint

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = pipeline_run(root, *SMALL, f"stage1.max_steps={FIRST_STEPS}")
    first = subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while latest_checkpoint(root / "work") is None:
            if first.poll() is not None:
                raise RuntimeError(f"the run ended before stage 1's first checkpoint:\n{first.stdout.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError("no training checkpoint in time")
            time.sleep(0.5)
        started = psutil.Process(first.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in started]
        os.kill(first.pid, signal.SIGTERM)  # the run's own process only, as a pod eviction or `kill` sends it
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    orphans = [" ".join(p.cmdline()) for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in started:  # nothing outlives the fixture, whatever the test then says of it
        if p.is_running():
            p.kill()
    run, folder, step = latest_checkpoint(root / "work")
    settings = [*SMALL, f"stage1.max_steps={step + MORE_STEPS}"]
    shown, status = in_terminal([*pipeline_run(root, *settings), "--resume", run])
    return StoppedRun(root, output, first.returncode, commands, orphans, run, folder, step, settings, shown, status)
