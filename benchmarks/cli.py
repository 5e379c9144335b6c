"""How fast `t2v` answers: its help, each verb's help, and an argument error, as a user's shell runs them (the
installed console script, a new process each time), median of rounds. The goal: each under a second on a quiet
machine, whatever the verb; `t2v` loads only the verb a command names, and only its settings until it runs.

    python benchmarks/cli.py            # 5 rounds
    python benchmarks/cli.py --quick    # 1 round (CI)

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from t2v.cli import VERBS

TARGET_S = 1.0


def commands() -> dict[str, list[str]]:
    """What a newcomer types first: the help, a typo of a verb, every verb's help, a flag a verb lacks."""
    return {
        "t2v --help": ["--help"],
        "t2v trian (not a verb)": ["trian"],
        **{f"t2v {verb} --help": [verb, "--help"] for verb in VERBS},
        "t2v train --no-such-flag": ["train", "--no-such-flag"],
        "t2v precompute --batch-size many": ["precompute", "--batch-size", "many"],
    }


def seconds(t2v: Path, args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([str(t2v), *args], capture_output=True, check=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round (for CI)")
    args = parser.parse_args(argv)
    t2v = Path(sys.executable).parent / "t2v"  # the console script installed beside this interpreter
    rounds = 1 if args.quick else 5
    times = {name: statistics.median(seconds(t2v, cmd) for _ in range(rounds)) for name, cmd in commands().items()}
    width = max(map(len, times))
    for name, s in times.items():
        print(f"{name:<{width}}  {s:6.3f} s")
    slowest = max(times, key=times.get)
    result = {
        "rounds": rounds,
        "seconds": times,
        "slowest": slowest,
        "slowest_s": times[slowest],
        "target_s": TARGET_S,
        "targets_met": times[slowest] < TARGET_S,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
