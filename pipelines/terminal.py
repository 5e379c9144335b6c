"""What `t2v pipeline run|rehearse` shows while kfp.local runs the DAG: the path of the run's log file first, then a
line per task as it starts and as it ends (its seconds and the one figure that says how it went), a live bar for
the training steps of the running stage, and on failure the failing task with its last lines. Everything kfp.local
and the tasks print goes, complete, to the log file (`--verbose` streams it instead).

The tasks report through components.common.events (a JSON line per event in a file beside the log), so nothing
here reads their output."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path

from components.common.events import EVENTS

WIDTH = 20  # task names, so the times line up
TAIL = 15  # lines of the log shown when a run fails outside any task
COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours its messages


class RunLog:
    """While open: this process's output and its children's (file descriptors 1 and 2) go to
    <root>/logs/<name>-<time>.log, and `terminal` (default: the standard output as it was) shows the tasks."""

    def __init__(self, root: Path, name: str = "run", terminal=None, poll_s: float = 0.2):
        self.path = Path(root) / "logs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self.events = self.path.with_suffix(".events.jsonl")
        self.terminal = terminal
        self.poll_s = poll_s
        self.started: dict[str, float] = {}
        self.ended: dict[str, str] = {}  # task -> "done" or "failed", its last state
        self.failures: dict[str, dict] = {}
        self._bars: dict = {}
        self._lock = threading.RLock()
        self._offset = 0

    # ----------------------------------------------------------------------------------------------- the log file

    def __enter__(self) -> RunLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.events.write_text("")
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        if self.terminal is None:
            self.terminal = open(os.dup(self._saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
            self._own_terminal = True
        else:
            self._own_terminal = False
        self.live = self.terminal.isatty()
        log = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        self._previous_events = os.environ.get(EVENTS)
        os.environ[EVENTS] = str(self.events.resolve())
        self.start = time.monotonic()
        self.say(f"log: {self.path}")
        self._stop = threading.Event()
        self._follower = threading.Thread(target=self._follow, name="runlog", daemon=True)
        self._follower.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._follower.join()
        self._read()
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        if self._previous_events is None:
            os.environ.pop(EVENTS, None)
        else:
            os.environ[EVENTS] = self._previous_events
        if self._own_terminal:
            self.terminal.close()

    # --------------------------------------------------------------------------------------------- the terminal

    def say(self, line: str) -> None:
        """A line on the terminal (above the running bar, if any)."""
        with self._lock:
            if self._bars:
                from tqdm import tqdm

                tqdm.write(line, file=self.terminal)
            else:
                self.terminal.write(line + "\n")
            self.terminal.flush()

    def finished(self) -> None:
        self._read()  # the last tasks' ends first
        self.say(f"finished in {time.monotonic() - self.start:.0f} s")

    def fail(self, err: BaseException) -> None:
        """After the run raised `err`: its traceback to the log; on the terminal the failing task (the last one that
        reported a failure and did not end well after it), its last lines and the log's path."""
        sys.stderr.flush()
        with open(self.path, "a") as log:
            traceback.print_exception(err, file=log)
        self._read()
        failed = [task for task, state in self.ended.items() if state == "failed"]
        if failed:
            event = self.failures[failed[-1]]
            self.say(f"failed: {failed[-1]}: {event['error']}")
            self.say(f"last lines of {failed[-1]}:")
            lines = event.get("lines", [])
        else:  # a task that died without a word (killed), or kfp.local itself
            running = [task for task in self.started if task not in self.ended]
            where = ", ".join(running) or "the pipeline"
            said = COLOURS.sub("", str(err)).strip().splitlines()
            self.say(f"failed: {where}: {said[0] if said else type(err).__name__}")
            self.say(f"last lines of {self.path}:")
            lines = tail(self.path, TAIL)
        for line in lines:
            self.say(f"    {line}")
        self.say(f"the whole output: {self.path}")

    # ------------------------------------------------------------------------------------------------ the events

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._read()

    def read(self) -> None:
        """Take in the events written so far (the follower thread does so every poll)."""
        self._read()

    def _read(self) -> None:
        with self._lock:
            with open(self.events, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.splitlines():
                self._on(json.loads(line))

    def _on(self, event: dict) -> None:
        task, kind = event.get("task") or "(task)", event["event"]
        if kind == "start":
            self.started[task] = event["time"]
            self.ended.pop(task, None)
            self.say(f"  start  {task}")
        elif kind == "steps":
            self._bar(task, event)
        elif kind in ("end", "fail"):
            bar = self._bars.pop(task, None)
            if bar is not None:
                bar.close()
            seconds = event["time"] - self.started.get(task, event["time"])
            if kind == "end":
                self.ended[task] = "done"
                self.say(f"  done   {task:<{WIDTH}} {seconds:6.1f} s  {event.get('figure', '')}".rstrip())
            else:
                self.ended[task] = "failed"
                self.failures[task] = event
                self.say(f"  failed {task:<{WIDTH}} {seconds:6.1f} s  {event.get('error', '')}".rstrip())

    def _bar(self, task: str, event: dict) -> None:
        if not self.live:  # a bar redrawn in place means nothing in a file or a CI log
            return
        from tqdm import tqdm

        bar = self._bars.get(task)
        if bar is None:
            bar = tqdm(total=event["total"], desc=f"  {task}", unit="step", file=self.terminal, leave=False,
                       dynamic_ncols=True)  # fmt: skip
            self._bars[task] = bar
        bar.n = event["done"]
        if event.get("loss") is not None:
            bar.set_postfix_str(f"loss {event['loss']:.4f}", refresh=False)
        bar.refresh()


def tail(path: Path, n: int) -> list[str]:
    """The last `n` lines of a text file, without kfp.local's colours."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200 * n * 4))
        lines = f.read().decode(errors="replace").splitlines()
    return [COLOURS.sub("", line) for line in lines[-n:]]
