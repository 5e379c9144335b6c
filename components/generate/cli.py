"""`t2v generate`: text to an mp4 (and optionally a GIF) with a trained pipeline."""

from __future__ import annotations

import argparse

from components.common.cli import add_verb
from components.generate.generate import GenerateConfig, generate

DESCRIPTION = """\
Generate a video from a text prompt with a trained pipeline: a registered version (models:/t2v-stdit@champion,
models:/t2v-stdit/3; the tracking URI from --tracking-uri or $MLFLOW_TRACKING_URI) or a pipeline folder written
by training (<out_dir>/pipeline). Rectified-flow Euler sampling with classifier-free guidance, at the shape the
model was trained at unless --frames/--height/--width say otherwise; the seed is printed and fixes the result.
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    add_verb(verbs, "generate", GenerateConfig, _run, description=DESCRIPTION)


def _run(cfg: GenerateConfig) -> int:
    paths = generate(cfg)
    print(f"seed {cfg.seed}: {', '.join(str(p) for p in paths)}")
    return 0
