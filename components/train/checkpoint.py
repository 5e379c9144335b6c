"""Training checkpoints: atomic step folders, the latest complete one, and pruning.

A checkpoint is written to `checkpoints/.tmp-step-NNNNNNNN/`, finished with a COMPLETE marker, then renamed to
`checkpoints/step-NNNNNNNN/`: a folder without the marker (a kill while writing) is never taken for complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

MARKER = "COMPLETE"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def begin(root: Path, step: int) -> Path:
    tmp = root / f".tmp-step-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(root: Path, tmp: Path, step: int, state: dict) -> Path:
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    (tmp / MARKER).write_text("")
    final = step_dir(root, step)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def latest(root: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    if not root.exists():
        return None
    done = [p for p in root.glob("step-*") if (p / MARKER).exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; remove older ones and leftovers of killed writes."""
    done = sorted((p for p in root.glob("step-*") if (p / MARKER).exists()), key=lambda p: int(p.name.split("-")[1]))
    for old in done[: max(0, len(done) - keep_last)]:
        shutil.rmtree(old)
    for leftover in root.glob(".tmp-step-*"):
        shutil.rmtree(leftover, ignore_errors=True)
