"""`t2v evaluate`: the command line of the evaluate step."""

from __future__ import annotations

import argparse
from dataclasses import fields

from components.evaluate.evaluate import EvalConfig, evaluate

DESCRIPTION = """\
Evaluate a trained pipeline on the held-out split of a precompute folder:
  - validation loss at fixed timesteps with fixed noise, per bucket and overall (Open-Sora 1.2's method);
  - sample videos for the held-out captions (or --prompts FILE), seed = --seed + i, as mp4 and GIF;
  - temporal consistency, motion (optical flow) and flicker; on toy-world prompts, prompt adherence per
    attribute (colour, shape, direction, background) read by a detector from the generated frames;
  - with weights given: CLIPScore (--clip-model), FVD (--fvd-model, I3D TorchScript), content-debiased FVD
    (--fvd-videomae), VBench dimensions (--vbench, needs the vbench package).
--baseline models:/t2v-stdit@champion evaluates the model in use the same way, in the same run, so that
`t2v register` can decide whether the new one replaces it (skipped, with a note, when there is none yet).
Writes <out-dir>/metrics.json, samples/, loss.png and report.html (self-contained: open it in a browser); with
--tracking-uri, an MLflow run holds them all.
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    d = EvalConfig()
    p = verbs.add_parser(
        "evaluate",
        help="validation loss, sample videos, metrics, prompt adherence and an HTML report",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=d.model, help=f"pipeline folder or models:/NAME@ALIAS (default {d.model})")
    p.add_argument("--data", default=d.data, help=f"precompute folder or root (default {d.data})")
    p.add_argument("--out-dir", default=d.out_dir, help=f"replaced as a whole (default {d.out_dir})")
    p.add_argument("--baseline", help="the model to compare with, e.g. models:/t2v-stdit@champion")
    p.add_argument("--prompts", help="file with one prompt per line (default: the held-out captions)")
    p.add_argument("--max-prompts", type=int, default=d.max_prompts, help=f"(default {d.max_prompts})")
    p.add_argument("--num-frames", type=int, help="frames for --prompts prompts (default: the model's)")
    p.add_argument("--height", type=int, help="pixels for --prompts prompts (default: the model's)")
    p.add_argument("--width", type=int, help="pixels for --prompts prompts (default: the model's)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"sampling steps (default {d.steps})")
    p.add_argument("--guidance-scale", type=float, default=d.guidance_scale, help=f"(default {d.guidance_scale})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"first sample's seed (default {d.seed})")
    p.add_argument("--fps", type=int, default=d.fps, help=f"frame rate of the sample files (default {d.fps})")
    p.add_argument("--val-timesteps", type=int, default=d.val_timesteps, help=f"(default {d.val_timesteps})")
    p.add_argument("--val-max-samples", type=int, default=d.val_max_samples, help=f"(default {d.val_max_samples})")
    p.add_argument("--clip-model", help="CLIP for CLIPScore, e.g. openai/clip-vit-large-patch14")
    p.add_argument("--fvd-model", help="I3D TorchScript file for FVD (i3d_torchscript.pt)")
    p.add_argument("--fvd-videomae", help="VideoMAE id/path for content-debiased FVD")
    p.add_argument("--fvd-max-videos", type=int, default=d.fvd_max_videos, help=f"(default {d.fvd_max_videos})")
    p.add_argument("--vbench", nargs="*", default=[], metavar="DIM", help="VBench dimensions, e.g. motion_smoothness")
    p.add_argument("--loss-curves", nargs="*", default=[], metavar="DIR", help="training out_dirs (default: lineage)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: no tracking)")
    p.add_argument("--experiment", default=d.experiment, help=f"(default {d.experiment})")
    p.add_argument("--device", default=d.device, help="auto (default), cpu, cuda")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(EvalConfig) if hasattr(args, f.name)}
    values.update(
        vbench_dimensions=tuple(args.vbench), loss_curves=tuple(args.loss_curves), progress=not args.no_progress
    )
    if args.max_prompts < 1:
        raise ValueError(f"--max-prompts={args.max_prompts} must be at least 1")
    result = evaluate(EvalConfig(**values))
    m = result["metrics"]
    shown = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if "/" not in k or k.startswith("adherence/"))
    print(f"{args.model}: {shown}")
    if result.get("baseline"):
        b = result["baseline"]
        version = b["model_info"].get("version")
        print(f"baseline {args.baseline} (version {version}): val_loss {b['metrics']['val_loss']:.4g}")
    for note in result["skipped"].values():
        print(f"note: {note}")
    print(
        f"report: {args.out_dir}/report.html   samples: {args.out_dir}/samples/   metrics: {args.out_dir}/metrics.json"
    )
    return 0
