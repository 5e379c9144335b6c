"""Shared test set-up: CPU, few threads, offline, tiny models."""

import logging
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def stopped_run(tmp_path_factory):
    """The small toy DAG stopped by SIGTERM in stage 1 and resumed in a terminal to the end (tests/runs.py)."""
    from tests.runs import stop_then_resume

    return stop_then_resume(tmp_path_factory.mktemp("stopped-run"))


@pytest.fixture(scope="session")
def local_run(stopped_run):
    """The resumed run to its end: its root, its pipeline arguments, its evaluation folder and registry decision."""
    from pipelines.local import latest_outputs, local_arguments
    from tests.runs import ROOT

    assert stopped_run.status == 0, stopped_run.shown[-3000:]
    root = stopped_run.root
    recipe = str(ROOT / "params.yaml")
    arguments = local_arguments(root, recipe, stopped_run.settings, resume_run=stopped_run.run)  # as the run made them
    return root, arguments, *latest_outputs(root)
