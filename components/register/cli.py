"""`t2v register`: the command line of the register step."""

from __future__ import annotations

import argparse
from dataclasses import fields

from components.register.register import RegisterConfig, register

DESCRIPTION = """\
Register an evaluated pipeline folder as a version of an MLflow registered model (default t2v-stdit): an MLflow
pyfunc (mlflow.pyfunc.load_model("models:/t2v-stdit@champion").predict(["a prompt"]) returns videos) with
lineage tags: git commit, data key and manifest hash, DVC md5 of the data, pipeline run id, each stage's config
and MLflow run, and the evaluation run.

The new version gets the alias `challenger`. The first version becomes `champion`; after that the champion moves
only when the challenger beats it on --metric by more than --margin, both evaluated on the same held-out set in
the same run (`t2v evaluate --baseline models:/t2v-stdit@champion`). The decision is printed, tagged on the
version, logged to the register run and written to <evaluation>/decision.json.
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    d = RegisterConfig()
    p = verbs.add_parser(
        "register",
        help="log a pipeline to the MLflow model registry; champion/challenger aliases",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=d.model, help=f"pipeline folder (default {d.model})")
    p.add_argument("--evaluation", default=d.evaluation, help=f"`t2v evaluate` out-dir (default {d.evaluation})")
    p.add_argument("--name", default=d.name, help=f"registered model name (default {d.name})")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default=d.experiment, help=f"(default {d.experiment})")
    p.add_argument("--metric", default=d.metric, help=f"decision metric from metrics.json (default {d.metric})")
    p.add_argument("--mode", default=d.mode, choices=("auto", "min", "max"), help="auto: min for losses and FVD")
    p.add_argument("--margin", type=float, default=d.margin, help=f"required improvement (default {d.margin})")
    p.add_argument("--pipeline-run-id", help="the KFP run id for the lineage (default: $KFP_RUN_ID)")
    p.add_argument("--bundle-max-mb", type=float, default=d.bundle_max_mb, help="bundle local encoders up to this")
    p.add_argument("--dvc-lock", default=d.dvc_lock, help=f"for the data's DVC md5 (default {d.dvc_lock})")
    p.add_argument("--decision-out", dest="decision_path", help="decision JSON (default <evaluation>/decision.json)")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(RegisterConfig) if hasattr(args, f.name)}
    decision = register(RegisterConfig(**values))
    alias = "champion and challenger" if decision["promoted"] else "challenger"
    print(f"{decision['name']} version {decision['version']} registered as {alias}: {decision['reason']}")
    return 0
