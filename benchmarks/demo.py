"""The demo as a benchmark: the whole KFP DAG on the toy world through kfp.local, wall time per step, and how well
the demo model follows its prompts (adherence per attribute, against chance).

    python benchmarks/demo.py            # the demo as `make demo` runs it
    python benchmarks/demo.py --quick    # a small world and a few steps per stage (CI: the timings' code path)

The full run checks the demo's targets and exits with 1 when one is missed: over 48 prompts or more (every colour x
direction pair), direction and shape adherence of 80% or more, colour and background 95% or more, the shapes
travelling within 30% of the held-out footage's distance per clip, all in 10 minutes or less.

Step times come from kfp.local's own task log records (start to finish of each task, process start included).
The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
import time
from pathlib import Path


class _TaskTimes(logging.Filter):
    """Start and end time of each kfp.local task, from its log records (a filter on the root logger: kfp.local
    replaces the root logger's handlers while it runs, not its filters)."""

    def __init__(self):
        super().__init__()
        self.start: dict[str, list[float]] = {}
        self.end: dict[str, list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        self._record(record)
        return True

    def _record(self, record: logging.LogRecord) -> None:
        text = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())
        if m := re.match(r"Executing task '([^']+)'", text):
            self.start.setdefault(m[1], []).append(record.created)
        elif m := re.match(r"Task '([^']+)' finished", text):
            self.end.setdefault(m[1], []).append(record.created)

    def seconds(self) -> dict[str, float]:
        out = {}
        for name, starts in self.start.items():
            ends = self.end.get(name, [])
            out[name] = round(max(ends) - min(starts), 2) if ends else float("nan")  # parallel shards: the span
        return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small world, few steps (CI)")
    parser.add_argument("--root", help="where to run (default: a temporary folder)")
    args = parser.parse_args(argv)

    from components.evaluate.adherence import ATTRIBUTES, CHANCE
    from pipelines.local import latest_outputs, local_arguments, run_local

    root = Path(args.root or tempfile.mkdtemp(prefix="t2v-demo-bench-"))
    quick = ["synth.videos=8", "synth.images=4", "stage1.max_steps=4", "stage2.max_steps=4", "stage3.max_steps=2",
             "evaluate.max_prompts=2", "evaluate.steps=2"]  # fmt: skip
    arguments = local_arguments(
        root, str(Path(__file__).resolve().parents[1] / "params.yaml"), quick if args.quick else []
    )
    times = _TaskTimes()
    logging.getLogger().addFilter(times)
    start = time.perf_counter()
    run_local(arguments, root)
    total = time.perf_counter() - start
    logging.getLogger().removeFilter(times)
    evaluation, _ = latest_outputs(root)
    metrics = json.loads((evaluation / "metrics.json").read_text())["metrics"]
    adherence = {name: metrics[f"adherence/{name}"] for name in ATTRIBUTES if f"adherence/{name}" in metrics}
    moved = {k: metrics.get(f"adherence/{k}") for k in ("displacement", "displacement_truth", "displacement_ratio")}
    steps = times.seconds()
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
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    raise SystemExit(0 if all(main().get("targets_met", {}).values()) else 1)
