"""Generation with a trained pipeline: a registered version or a pipeline folder, one prompt, an mp4 (and a GIF)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.common.settings import setting


@dataclass(frozen=True)
class GenerateConfig:
    prompt: str = setting("", 'e.g. "a red circle moves left on a black background"', positional=True)
    model: str = setting("models:/t2v-stdit@champion", "a registered version (models:/NAME@ALIAS) or a pipeline folder")
    tracking_uri: str | None = setting(None, "MLflow tracking/registry URI for models:/ (default $MLFLOW_TRACKING_URI)")
    out: str = setting("out.mp4", "output mp4")
    frames: int | None = setting(None, "frames (default: as trained)")
    height: int | None = setting(None, "pixels (default: as trained)")
    width: int | None = setting(None, "pixels (default: as trained)")
    steps: int | None = setting(None, "sampling steps (default: the pipeline's, 30 rectified-flow or 100 IDDPM steps)")
    guidance: float = setting(7.0, "classifier-free guidance scale")
    seed: int = setting(0, "seed of the initial noise")
    fps: int = setting(8, "frame rate of the file")
    gif: bool = setting(False, "also write a GIF beside the mp4")
    progress: bool = setting(True, "progress bar")


def generate(cfg: GenerateConfig) -> list[Path]:
    """Write the video for `cfg.prompt` to `cfg.out` (mp4, and a GIF beside it when asked); return the paths."""
    if not cfg.prompt.strip():
        raise ValueError('prompt is empty: give one, e.g. t2v generate "a red circle moves left"')
    import torch

    from components.common.registry import load_pipeline
    from components.common.video import write_video
    from model.inference.pipeline import to_uint8

    pipe, _ = load_pipeline(cfg.model, cfg.tracking_uri, "cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=not cfg.progress)
    frames = pipe(
        cfg.prompt,
        num_frames=cfg.frames,
        height=cfg.height,
        width=cfg.width,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance,
        generator=torch.Generator().manual_seed(cfg.seed),
    ).frames
    video = to_uint8(frames[0])
    written = [Path(cfg.out)]
    write_video(cfg.out, list(video), cfg.fps)
    if cfg.gif:
        import imageio.v2 as imageio

        written.append(Path(cfg.out).with_suffix(".gif"))
        imageio.mimsave(written[-1], list(video), duration=1 / cfg.fps, loop=0)
    return written
