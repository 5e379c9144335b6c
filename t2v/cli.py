"""`t2v`: the front door. Each verb calls one step's function; `python -m components.<step>` calls the same one."""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="t2v",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(title="verbs", metavar="<verb>", required=True)
    from components.caption import cli as caption_cli
    from components.evaluate import cli as evaluate_cli
    from components.generate import cli as generate_cli
    from components.ingest import cli as ingest_cli
    from components.plan import cli as plan_cli
    from components.precompute import cli as precompute_cli
    from components.register import cli as register_cli
    from components.synth import cli as synth_cli
    from components.train import cli as train_cli
    from model import cli as model_cli
    from pipelines import cli as pipeline_cli

    steps = (synth_cli, ingest_cli, caption_cli, precompute_cli, train_cli, evaluate_cli, register_cli, generate_cli)
    for module in (*steps, pipeline_cli, plan_cli, model_cli):
        module.add_parser(verbs)
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

    return run_parser(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
