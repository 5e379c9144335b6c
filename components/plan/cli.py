"""`t2v plan`: the command line of the plan step."""

from __future__ import annotations

import argparse

from components.common.cli import add_verb
from components.plan.plan import PlanSettings, plan_schedule

DESCRIPTION = """\
What a training schedule costs before anyone rents a GPU: per stage the model FLOPs per sample (forward + backward;
beside them the full-attention baseline's and what recomputing every block adds), the total FLOPs (steps x batch,
or epochs x clips), GPU-hours and dollars at an MFU, wall-clock days on --num-gpus, and the memory per GPU at the
stage's batch (ZeRO-2 over all GPUs) with the largest batch that fits.

The MFU (model FLOPs over the GPUs' dense bf16 peak; recompute counts as lost time): --mfu, or --calibrate
STAGE=GPU_DAYS (the MFU at which a stage took that long, e.g. a published report), or the `mfu` the trainer logged
on GPUs in an MLflow run (--tracking-uri and --run-id). Without them: the MFU of the training step `t2v train` runs
on a GPU, as benchmarks/gpu.py last measured it (the title line names the measurement). With a run, the plan is
also put next to what the run measured (tokens/s per GPU, peak memory).

The schedule file is the step's settings file (--config); the flags below set where it would run.

  t2v plan --config configs/plan/opensora-1.0.yaml --gpu h800 --num-gpus 64 --calibrate video-pretrain=117
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    add_verb(
        verbs,
        "plan",
        PlanSettings,
        _run,
        description=DESCRIPTION,
    )


def _run(cfg: PlanSettings) -> int:
    plan_schedule(cfg)
    return 0
