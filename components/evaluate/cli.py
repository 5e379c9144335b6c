"""`t2v evaluate`: the command line of the evaluate step."""

from __future__ import annotations

import argparse

from components.common.cli import add_verb
from components.evaluate.config import EvalConfig

DESCRIPTION = """\
Evaluate a trained pipeline on the held-out split of a precompute folder:
  - validation loss at fixed timesteps with fixed noise, per bucket and overall (Open-Sora 1.2's method);
  - sample videos for the held-out captions (or --prompts FILE), seed = --seed + i, as mp4 and GIF;
  - temporal consistency, motion (optical flow) and flicker; on toy-world prompts, prompt adherence per
    attribute (colour, shape, direction, background) read by a detector from the generated frames;
  - with weights given: CLIPScore (--clip-model), FVD (--fvd-model, I3D TorchScript), content-debiased FVD
    (--fvd-videomae), VBench dimensions (--vbench-dimensions, needs the vbench package).
--baseline models:/t2v-stdit@champion evaluates the model in use the same way, in the same run, so that
`t2v register` can decide whether the new one replaces it (skipped, with a note, when there is none yet).
Writes <out-dir>/metrics.json, samples/, loss.png and report.html (self-contained: open it in a browser); with
--tracking-uri, an MLflow run holds them all.
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    add_verb(verbs, "evaluate", EvalConfig, _run, description=DESCRIPTION)


def _run(cfg: EvalConfig) -> int:
    from components.evaluate.evaluate import evaluate  # the step's libraries load when it runs, not for --help

    result = evaluate(cfg)
    m = result["metrics"]
    shown = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if "/" not in k or k.startswith("adherence/"))
    print(f"{cfg.model}: {shown}")
    if result.get("baseline"):
        b = result["baseline"]
        version = b["model_info"].get("version")
        print(f"baseline {cfg.baseline} (version {version}): val_loss {b['metrics']['val_loss']:.4g}")
    for note in result["skipped"].values():
        print(f"note: {note}")
    print(f"report: {cfg.out_dir}/report.html   samples: {cfg.out_dir}/samples/   metrics: {cfg.out_dir}/metrics.json")
    return 0
