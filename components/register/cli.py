"""`t2v register`: the command line of the register step."""

from __future__ import annotations

import argparse

from components.common.cli import add_verb
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
    add_verb(verbs, "register", RegisterConfig, _run, description=DESCRIPTION)


def _run(cfg: RegisterConfig) -> int:
    decision = register(cfg)
    alias = "champion and challenger" if decision["promoted"] else "challenger"
    print(f"{decision['name']} version {decision['version']} registered as {alias}: {decision['reason']}")
    return 0
