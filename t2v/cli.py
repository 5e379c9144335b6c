"""`t2v`: the front door. Each verb calls one step's function; `python -m components.<step>` calls the same one."""

from __future__ import annotations

import argparse
import importlib
import sys

DESCRIPTION = """\
t2v-pipeline: train an Open-Sora-style text-to-video model (STDiT, three stages) on your own GPU cluster.

The same steps run as a Kubeflow Pipelines DAG, locally, or through `dvc repro`; MLflow records every run.
"""

EPILOG = """\
examples:
  t2v data synth --out-dir data/toy          write the toy world (captioned mp4s and stills)
  t2v ingest data/toy --out-dir data/ingest  clips, scores, quarantine, split -> manifest.parquet
  t2v caption --captioner metadata           captions from sidecar files (or a VLM: --model ID)
  t2v train --recipe params.yaml --stage 1   one training stage (ColossalAI), its recipe section
  t2v evaluate --model data/train/stage3/pipeline   metrics, samples, report.html
  t2v register --tracking-uri sqlite:///mlflow.db   model registry, champion/challenger
  t2v generate "a red circle moves left on a black background" --model models:/t2v-stdit@champion
  t2v model --preset XL/2          parameters and FLOPs of a model preset at a given video shape
  t2v buckets --gpu-memory 80      the largest batch per bucket that fits an 80 GB GPU (a bucket preset)

Run `t2v <verb> --help` for the options of each verb.
"""


# Each verb: the module whose add_parser declares it, and its line in `t2v --help`. Only the verb a command names is
# imported (its settings, not its step's libraries), so the help and argument errors answer at once.
VERBS = {
    "data": ("components.synth.cli", "generated datasets and tiny models"),
    "ingest": ("components.ingest.cli", "videos and images -> filtered clip manifest with a held-out split"),
    "caption": ("components.caption.cli", "a caption per clip: vision-language model or metadata"),
    "precompute": ("components.precompute.cli", "VAE latents and text embeddings, once, into a keyed cache"),
    "train": ("components.train.cli", "train one STDiT stage (1 images, 2 video, 3 high-quality) with ColossalAI"),
    "evaluate": (
        "components.evaluate.cli",
        "validation loss, sample videos, metrics, prompt adherence and an HTML report",
    ),
    "register": ("components.register.cli", "log a pipeline to the MLflow model registry; champion/challenger aliases"),
    "generate": ("components.generate.cli", "a video from a text prompt with a trained pipeline"),
    "pipeline": ("pipelines.cli", "the KFP DAG: compile to IR YAML, run locally (kfp.local), submit to a KFP host"),
    "plan": ("components.plan.cli", "FLOPs, GPU-hours, dollars, days and memory per stage of a training schedule"),
    "model": ("model.cli", "parameters and FLOPs of the STDiT presets"),
    "buckets": ("model.cli", "the largest batch per bucket that fits a GPU's memory (a bucket_config preset)"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `t2v` parser. With `argv`, only the verb it names is declared in full (the others are a line of help);
    without, every verb is."""
    parser = argparse.ArgumentParser(
        prog="t2v",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(title="verbs", metavar="<verb>", required=True)
    # the top level's own flags take no value, so the verb is the first word
    wanted = VERBS if argv is None else [arg for arg in argv if not arg.startswith("-")][:1]
    declared = argparse.ArgumentParser(prog=parser.prog).add_subparsers()
    for module in dict.fromkeys(VERBS[verb][0] for verb in wanted if verb in VERBS):
        importlib.import_module(module).add_parser(declared)
    for verb, (_, help) in VERBS.items():
        verbs.add_parser(verb, help=help)
        if verb in declared.choices:
            verbs.choices[verb] = declared.choices[verb]  # the verb's own parser, listed with its line of help
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("t2v-pipeline")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    from components.common.quiet import quiet_libraries

    quiet_libraries()  # before the verbs' modules load: some libraries warn as they are imported
    from components.common.cli import run_parser

    return run_parser(build_parser(sys.argv[1:] if argv is None else argv), argv)


if __name__ == "__main__":
    sys.exit(main())
