"""`t2v train`: the command line of the train step."""

from __future__ import annotations

import argparse

from components.common.cli import add_verb, from_args
from components.common.settings import read_yaml, stage_sections
from components.train.config import STAGE_FRAMES, TrainConfig

DESCRIPTION = """\
Train one stage of STDiT on a precompute folder with the ColossalAI Booster (ddp on CPU, zero2 with bf16 on
GPU). Stage 1 trains on images (from scratch or from PixArt), stage 2 on videos from stage 1's export (the
temporal attention starts as a no-op), stage 3 on a high-quality subset from stage 2's export.

Settings: the defaults below, a recipe's `train` and `stage<N>` sections (--recipe params.yaml --stage 2), a YAML
file of what differs (--config configs/train/stage1.yaml), flags, and --set key=value (e.g. --set optim.lr=1e-4).

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
    add_verb(verbs, "train", TrainConfig, _run, description=DESCRIPTION, sections=_sections)


def _stage(args: argparse.Namespace) -> int:
    """The stage whose recipe section (`stage<N>`, over `train`) applies, by the precedence of every setting:
    --set stage=N over --stage over the --config file's `stage`, else 1 (so the section read is the stage trained)."""
    given = [item.split("=", 1)[1].strip() for item in args.set if item.split("=", 1)[0].strip() == "stage"]
    config = getattr(args, "config", None)
    from_config = read_yaml(config, "--config").get("stage") if config else None
    stage = given[-1] if given else getattr(args, "setting:stage", None) or from_config or 1
    if str(stage) not in {str(s) for s in STAGE_FRAMES}:
        raise ValueError(f"stage={stage} must be 1, 2 or 3")
    return int(stage)


def _sections(args: argparse.Namespace) -> tuple[str, str]:
    return stage_sections(_stage(args))


def _run(cfg: TrainConfig) -> int:
    from components.train.train import train  # the step's libraries load when it runs, not for --help

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


def config_from_argv(argv: list[str]) -> TrainConfig:
    """The settings `t2v train ARGV` would train with (the KFP component runs a stage in-process with these)."""
    parser = argparse.ArgumentParser(prog="t2v train")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    return from_args(TrainConfig, args, sections=_sections(args))
