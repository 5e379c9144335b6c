"""`t2v generate`: text to an mp4 (and optionally a GIF) with a trained pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Generate a video from a text prompt with a trained pipeline: a registered version (models:/t2v-stdit@champion,
models:/t2v-stdit/3; the tracking URI from --tracking-uri or $MLFLOW_TRACKING_URI) or a pipeline folder written
by training (<out_dir>/pipeline). Rectified-flow Euler sampling with classifier-free guidance, at the shape the
model was trained at unless --frames/--height/--width say otherwise; the seed is printed and fixes the result.
"""


def generate(
    prompt: str,
    model: str,
    out: str,
    *,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    steps: int = 30,
    guidance: float = 7.0,
    seed: int = 0,
    fps: int = 8,
    gif: bool = False,
    progress: bool = True,
    tracking_uri: str | None = None,
) -> list[Path]:
    """Write the video for `prompt` to `out` (mp4, and a GIF beside it when asked); return the paths."""
    import torch

    from components.common.video import write_video
    from components.register.registry import load_pipeline

    pipe, _ = load_pipeline(model, tracking_uri, "cuda" if torch.cuda.is_available() else "cpu")
    video = pipe(
        prompt,
        num_frames=frames,
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        progress=progress,
    )[0]
    written = [Path(out)]
    write_video(out, list(video), fps)
    if gif:
        import imageio.v2 as imageio

        written.append(Path(out).with_suffix(".gif"))
        imageio.mimsave(written[-1], list(video), duration=1 / fps, loop=0)
    return written


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "generate",
        help="a video from a text prompt with a trained pipeline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", help='e.g. "a red circle moves left on a black background"')
    p.add_argument("--model", required=True, help="models:/t2v-stdit@champion or a pipeline folder")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI for models:/ (default $MLFLOW_TRACKING_URI)")
    p.add_argument("--out", default="out.mp4", help="output mp4 (default out.mp4)")
    p.add_argument("--frames", type=int, help="frames (default: as trained)")
    p.add_argument("--height", type=int, help="pixels (default: as trained)")
    p.add_argument("--width", type=int, help="pixels (default: as trained)")
    p.add_argument("--steps", type=int, default=30, help="sampling steps (default 30)")
    p.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance scale (default 7)")
    p.add_argument("--seed", type=int, default=0, help="(default 0)")
    p.add_argument("--fps", type=int, default=8, help="frame rate of the file (default 8)")
    p.add_argument("--gif", action="store_true", help="also write a GIF beside the mp4")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    paths = generate(
        args.prompt,
        args.model,
        args.out,
        frames=args.frames,
        height=args.height,
        width=args.width,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        fps=args.fps,
        gif=args.gif,
        progress=not args.no_progress,
        tracking_uri=args.tracking_uri,
    )
    print(f"seed {args.seed}: {', '.join(str(p) for p in paths)}")
    return 0
