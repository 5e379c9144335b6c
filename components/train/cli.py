"""`t2v train`: the command line of the train step."""

from __future__ import annotations

import argparse

from components.train.config import load_config
from components.train.train import train

DESCRIPTION = """\
Train one stage of STDiT on a precompute folder with the ColossalAI Booster (ddp on CPU, zero2 with bf16 on
GPU). Stage 1 trains on images (from scratch or from PixArt), stage 2 on videos from stage 1's export (the
temporal attention starts as a no-op), stage 3 on a high-quality subset from stage 2's export.

The configuration is a YAML file that overrides only what differs from the defaults (see configs/train/ and
configs/toy/), plus --set key=value overrides (e.g. --set optim.lr=1e-4 --set max_steps=500).

Checkpoints go to <out_dir>/checkpoints/step-N/ (atomic); with --resume auto (default) a run continues from the
latest complete one, so a retried or pre-empted job picks up where it stopped. The final EMA weights are
exported to <out_dir>/export (diffusers save_pretrained) for the next stage and for evaluation.
Multi-process: torchrun --nproc_per_node N -m components.train --config ... (multi-node: the rendezvous
environment of the cluster). Noise, timesteps and caption dropout are drawn per global sample (seed, step, sample
index), and every bucket batch is a global batch split over the processes, so results do not depend on the number
of processes. --set sp=2 splits each video's frames over 2 processes (sequence parallelism: all-to-all around
temporal attention; gloo on CPU, NCCL on GPU).

Per-GPU batch sizes for a GPU size: --set buckets=configs/buckets/80gb.yaml (presets for 24, 40, 80 and 141 GB
made by `t2v buckets`; the global batch is the preset's batch x data-parallel processes).

NaN or loss spikes (guard.*): a step with a non-finite loss or gradient norm, or a loss above guard.spike_factor x
the median of the last guard.window steps, is skipped and counted (MLflow: guard/skipped_steps); after
guard.max_bad_steps bad steps in a row the run rolls back to its latest checkpoint, multiplies the learning rate
by guard.lr_factor (guard/rollbacks, guard/lr_scale) and moves on with the next batches.
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "train",
        help="train one STDiT stage (1 images, 2 video, 3 high-quality) with ColossalAI",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="stage YAML (configs/train/stage1.yaml, ...)")
    p.add_argument("--stage", type=int, choices=(1, 2, 3), help="overrides the config's stage")
    p.add_argument("--data", help="precompute folder (overrides the config)")
    p.add_argument("--out-dir", help="output folder (overrides the config)")
    p.add_argument("--resume", help="auto (default), none, or a checkpoint folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, repeatable")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    for key, value in (("stage", args.stage), ("data", args.data), ("out_dir", args.out_dir), ("resume", args.resume)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.no_progress:
        overrides.append("progress=false")
    cfg = load_config(args.config, overrides)
    result = train(cfg)
    last = result.val_loss.get("val_loss")
    print(
        f"stage {cfg.stage}: {result.steps} steps (resumed at {result.resumed_from}); loss {result.losses[-1]:.4f}"
        + (f", validation loss {last:.4f}" if last is not None else "")
        + f"; export: {result.export_dir}"
        if result.losses
        else f"stage {cfg.stage}: already at step {result.steps}; export: {result.export_dir}"
    )
    return 0
