"""`t2v data synth` and `t2v data tiny-models`: the toy world and the tiny models, for the demo and the tests."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.common.cli import add_arguments, from_args
from components.synth import synth

TINY_MODELS = ("t5", "vae", "llava-next")


def add_parser(verbs: argparse._SubParsersAction) -> None:
    data = verbs.add_parser("data", description="Generated datasets.")
    sub = data.add_subparsers(title="commands", metavar="<command>", required=True)
    p = sub.add_parser(
        "synth",
        help="write the toy world: captioned mp4s of moving shapes, stills and their ground truth",
        description=synth.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, synth.SynthConfig)
    p.set_defaults(run=_run_synth)
    t = sub.add_parser(
        "tiny-models",
        help="write tiny random encoders and captioner (T5, SD-VAE layout, LLaVA-NeXT) for the toy world",
        description="Tiny random models saved as real model folders (t5/, vae/, llava-next/) that load through "
        "the production from_pretrained paths: the toy world's text encoder, VAE and captioner.",
    )
    t.add_argument("--out-dir", default="data/models", help="(default data/models)")
    t.add_argument("--seed", type=int, default=0, help="(default 0)")
    t.set_defaults(run=_run_tiny)


def _run_synth(args: argparse.Namespace) -> int:
    cfg = from_args(synth.SynthConfig, args, sections=("synth",))
    out = synth.synth(cfg)
    summary = json.loads((out / "summary.json").read_text())
    print(
        f"toy world: {cfg.videos} videos, {cfg.images} stills, {cfg.pairs} two-shape videos, "
        f"{summary['near_duplicates']} near-duplicates -> {out} (ground truth: {out / 'ground_truth.csv'})"
    )
    return 0


def _run_tiny(args: argparse.Namespace) -> int:
    from components.common.toy.tiny import build_tiny_llava_next, build_tiny_t5, build_tiny_vae

    out = Path(args.out_dir)
    for name, build in zip(TINY_MODELS, (build_tiny_t5, build_tiny_vae, build_tiny_llava_next), strict=True):
        build(out / name, seed=args.seed)
    print(f"tiny models in {out}: {', '.join(f'{n}/' for n in TINY_MODELS)}")
    return 0
