"""What a running task tells the process that started it (`t2v pipeline run|rehearse`): that it started, that it
ended with the one figure that says how it went or failed with its error, and how many training steps are done.

Each event is one JSON line appended to the file $T2V_EVENTS names, so the runner follows the tasks without
reading their output. Where nothing sets it (a cluster, `dvc repro`, a terminal) nothing is written."""

from __future__ import annotations

import json
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

EVENTS = "T2V_EVENTS"  # the file events are appended to
TASK = "T2V_TASK"  # the running task's name, for the events of its child processes (torchrun's workers)
LAST_LINES = 12  # of a failing task's traceback


def emit(event: str, **fields) -> None:
    """Append one event of the current task (a no-op without $T2V_EVENTS)."""
    path = os.environ.get(EVENTS)
    if not path:
        return
    record = {"time": time.time(), "task": os.environ.get(TASK, ""), "event": event, **fields}
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:  # one write of one line: lines of tasks running side by side never interleave
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass
class Report:
    figure: str = ""  # what the task's end line shows, e.g. "16 clips kept from 12 files"


@contextmanager
def task(name: str):
    """Report `name`'s start, then its end with `report.figure`, or its failure with the traceback's last lines."""
    previous = os.environ.get(TASK)
    os.environ[TASK] = name
    emit("start")
    report = Report()
    try:
        yield report
    except BaseException as err:
        lines = "".join(traceback.format_exception(err)).rstrip().splitlines()
        emit("fail", error=f"{type(err).__name__}: {err}".splitlines()[0], lines=lines[-LAST_LINES:])
        raise
    else:
        emit("end", figure=report.figure)
    finally:
        if previous is None:
            os.environ.pop(TASK, None)
        else:
            os.environ[TASK] = previous


class Steps:
    """Training steps done, for the runner's progress bar: at most one event per `every` seconds, and the last."""

    def __init__(self, total: int, every: float = 0.5, enabled: bool = True):
        self.total, self.every = total, every
        self.enabled = enabled and bool(os.environ.get(EVENTS))
        self.last = float("-inf")  # the first update always goes

    def update(self, done: int, loss: float | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= self.every or done >= self.total:
            self.last = now
            emit("steps", done=done, total=self.total, loss=loss)
