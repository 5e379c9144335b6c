"""Whether a stage runs at the pace its recipe measured: a stage that logs far fewer tokens per second than
`expected_tokens_per_s` says so once, with what usually causes it on a shared machine (other processes on the CPU,
thread counts), so that a slow run is not taken for a slow product."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
WINDOWS = 3  # logged windows whose median is judged
PACE_FILE = "pace.json"  # beside the stage's outputs, not in them: a machine's pace is not the stage's result


def machine_state() -> str:
    """The load average against the cores, and the thread counts torch and OpenMP use."""
    import torch

    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    return f"load average {load:.1f} on {cores} cores, torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={omp}"


class Pace:
    """Watches the logged throughput of one stage; `said` is the message once it was found slow ("" until then)."""

    def __init__(self, expected: float | None, factor: float, stage: int, out_dir: str | Path):
        self.expected, self.factor, self.stage = expected, factor, stage
        self.path = Path(out_dir) / PACE_FILE
        self.path.unlink(missing_ok=True)
        self.said = ""
        self.rates: list[float] = []

    def observe(self, step: int, tokens_per_s: float | None, first_step: int) -> str:
        """Take one logged window's rate (not the first: it holds the warm-up); the message once the median of the
        last WINDOWS is slow (a window that held a validation or a checkpoint alone is not), said once."""
        if self.said or not self.expected or not tokens_per_s or step <= first_step:
            return self.said
        self.rates = [*self.rates[-(WINDOWS - 1) :], tokens_per_s]
        tokens_per_s = float(np.median(self.rates))
        if len(self.rates) < WINDOWS or tokens_per_s * self.factor >= self.expected:
            return ""
        self.said = (
            f"stage {self.stage} runs {self.expected / tokens_per_s:.1f}x slower than its recipe measured "
            f"({tokens_per_s:.0f} tokens/s, expected {self.expected:.0f}): {machine_state()}; other work on the "
            "CPU or more threads than cores slows every step"
        )
        log.warning("%s", self.said)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"step": step, "slow": self.said}) + "\n")
        return self.said


def slow_note(out_dir: str | Path) -> str | None:
    """What a stage said of its pace, if it was slow."""
    path = Path(out_dir) / PACE_FILE
    return json.loads(path.read_text())["slow"] if path.exists() else None
