"""The demo as a benchmark: the whole KFP DAG on the toy world through kfp.local, wall time per step, and how well
the demo model follows its prompts (adherence per attribute, against chance).

    python benchmarks/demo.py                      # run the demo as `make demo` does, then its figures
    python benchmarks/demo.py --quick              # a small world and a few steps per stage (no targets checked)
    python benchmarks/demo.py --run outputs/demo   # the figures of a run already made (`make demo`), not a new one

A run is `t2v pipeline run` (its terminal display shows the tasks as they go). The full run checks the demo's
targets and exits with 1 when one is missed: over 48 prompts or more (every colour x direction pair), direction and
shape adherence of 80% or more, colour and background 95% or more, the shapes travelling within 30% of the held-out
footage's distance per clip, all in 10 minutes or less; when the recipe holds combinations out of training (the
demo's does), the same over the 48 or more prompts asking for held-out combinations and over the 48 or more seen
ones apart, with shape at 90% or more in both.

Step times come from kfp.local's own timestamped task lines in the run's log (<root>/logs/, the newest): start to
finish of each task, process start included. The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

QUICK = ["synth.videos=8", "synth.images=4", "stage1.max_steps=4", "stage2.max_steps=4", "stage3.max_steps=2",
         "evaluate.max_prompts=2", "evaluate.steps=2"]  # fmt: skip
_LINE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) - [A-Z]+ - (.*)")


def task_times(log: Path) -> tuple[dict[str, float], float]:
    """({task: seconds}, the run's seconds) from a run log's kfp.local lines. A task's time runs from its first start
    to its last end (parallel shards: the span; a retried task: every attempt); the run's from the first line to the
    last. Clock times only carry the time of day: a line more than 12 hours earlier than the latest is on the next
    day (parallel tasks' lines arrive a few milliseconds out of order)."""
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    first = last = None
    for raw in log.read_text(errors="replace").splitlines():
        m = _LINE.fullmatch(re.sub(r"\x1b\[[0-9;]*m", "", raw).rstrip())  # a task's own lines are indented
        if not m:
            continue
        h, mnt, s, ms, text = m.groups()
        at = int(h) * 3600 + int(mnt) * 60 + int(s) + int(ms) / 1000
        while last is not None and at < last - 43200:
            at += 86400
        first, last = first if first is not None else at, max(at, last if last is not None else at)
        if task := re.match(r"Executing task '([^']+)'", text):
            start.setdefault(task[1], at)
        elif task := re.match(r"Task '([^']+)' finished", text):
            end[task[1]] = at
    if first is None:
        raise ValueError(f"{log}: no kfp.local lines; is it the log of a `t2v pipeline run`?")
    steps = {name: round(end[name] - t, 2) if name in end else float("nan") for name, t in start.items()}
    return steps, round(last - first, 1)


def newest_log(root: Path) -> Path:
    logs = sorted((root / "logs").glob("run-*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        raise ValueError(f"no run log under {root / 'logs'}: give the --root of a `t2v pipeline run`")
    return logs[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small world, few steps (CI); no targets checked")
    parser.add_argument("--root", help="where to run (default: a temporary folder)")
    parser.add_argument("--run", metavar="ROOT", help="read the figures of the run made under ROOT; run nothing")
    args = parser.parse_args(argv)

    from components.evaluate.adherence import ATTRIBUTES, CHANCE
    from pipelines.local import latest_outputs

    if args.run:
        root = Path(args.run)
    else:
        root = Path(args.root or tempfile.mkdtemp(prefix="t2v-demo-bench-"))
        sets = [a for item in (QUICK if args.quick else []) for a in ("--set", item)]
        subprocess.run([sys.executable, "-m", "t2v", "pipeline", "run", "--root", str(root), *sets], check=True)
    steps, total = task_times(newest_log(root))
    evaluation, _ = latest_outputs(root)
    metrics = json.loads((evaluation / "metrics.json").read_text())["metrics"]
    adherence = {name: metrics[f"adherence/{name}"] for name in ATTRIBUTES if f"adherence/{name}" in metrics}
    moved = {k: metrics.get(f"adherence/{k}") for k in ("displacement", "displacement_truth", "displacement_ratio")}
    print(f"{'step':<20}{'seconds':>10}")
    for name, seconds in steps.items():
        print(f"{name:<20}{seconds:>10.1f}")
    print(f"{'total':<20}{total:>10.1f}")
    print(f"\n{'attribute':<12}{'adherence':>10}{'chance':>10}")
    for name, value in adherence.items():
        print(f"{name:<12}{value:>10.0%}{CHANCE[name]:>10.0%}")
    if moved["displacement_truth"] is not None:
        print(f"\nshapes travel {moved['displacement']:.1f} px per clip in the direction asked; the held-out "
              f"footage's {moved['displacement_truth']:.1f} px (ratio {moved['displacement_ratio']:.2f})")  # fmt: skip
    groups = {  # with a recipe that holds combinations out of training: those prompts and the others apart
        group: {name: metrics[f"adherence/{group}/{name}"] for name in (*ATTRIBUTES, "prompts")
                if f"adherence/{group}/{name}" in metrics}
        for group in ("held_out", "seen")
        if f"adherence/{group}/mean" in metrics
    }  # fmt: skip
    pairs = {
        k: metrics[f"adherence/pairs/{k}"] for k in ("objects", "both", "prompts") if f"adherence/pairs/{k}" in metrics
    }
    for group, scores in groups.items():
        print(f"{group}: " + ", ".join(f"{k} {v:.0%}" for k, v in scores.items() if k != "prompts")
              + f" over {scores['prompts']:.0f} prompts")  # fmt: skip
    if pairs:
        print(f"two-shape prompts: {pairs['objects']:.0%} of the shapes right, both right in {pairs['both']:.0%}")
    prompts = len(json.loads((evaluation / "metrics.json").read_text())["samples"])
    result = {
        "quick": args.quick,
        "total_s": round(total, 1),
        "step_s": steps,
        "adherence": adherence,
        "chance": CHANCE,
        **moved,
        "val_loss": metrics["val_loss"],
        "prompts": prompts,
        **({"adherence_" + group: scores for group, scores in groups.items()}),
        **({"pairs": pairs} if pairs else {}),
    }
    if not args.quick:
        ratio = moved["displacement_ratio"]
        result["targets_met"] = {
            "prompts>=48": prompts >= 48,
            "direction>=0.8": adherence.get("direction", 0) >= 0.8,
            "shape>=0.8": adherence.get("shape", 0) >= 0.8,
            "colour>=0.95": adherence.get("colour", 0) >= 0.95,
            "background>=0.95": adherence.get("background", 0) >= 0.95,
            "displacement_within_30%": ratio is not None and abs(ratio - 1) <= 0.3,
            "total_s<=600": total <= 600,
        }
        if groups:  # composition: combinations no training clip showed, read as well as the seen ones
            held, seen = groups.get("held_out", {}), groups.get("seen", {})
            result["targets_met"] |= {
                "held_out_prompts>=48": held.get("prompts", 0) >= 48,
                "seen_prompts>=48": seen.get("prompts", 0) >= 48,
                "held_out_direction>=0.8": held.get("direction", 0) >= 0.8,
                "held_out_shape>=0.9": held.get("shape", 0) >= 0.9,
                "seen_shape>=0.9": seen.get("shape", 0) >= 0.9,
                "held_out_colour>=0.95": held.get("colour", 0) >= 0.95,
                "held_out_background>=0.95": held.get("background", 0) >= 0.95,
                "seen_direction>=0.8": seen.get("direction", 0) >= 0.8,
                "seen_colour>=0.95": seen.get("colour", 0) >= 0.95,
                "seen_background>=0.95": seen.get("background", 0) >= 0.95,
            }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    raise SystemExit(0 if all(main().get("targets_met", {}).values()) else 1)
