"""Shared test set-up: CPU, few threads, offline, tiny models."""

import logging
import os

import pytest
import torch

from tests import workers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # one of several workers (make test): the cores shared among them,
    # and the same count for the processes a test starts, so that a run in a child computes what one here does
    threads = str(max(1, (os.cpu_count() or 2) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def pytest_configure(config):
    workers.configure(config)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
    workers.share_work(config, items)


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


# The local services (pipelines.services): a real MLflow server with authentication on (`--app-name basic-auth`), on
# PostgreSQL with its artifacts in S3, all on loopback, started once per session for every test that talks to them
# (the registry's and the services' own); the tests' MLflow calls go as the pipeline identity, through the variables
# a cluster's tasks get.
@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """Running LocalServices; MLflow's client is bounded (seconds, not minutes) and authenticates as the pipeline."""
    from pipelines.services import LocalServices

    with LocalServices(tmp_path_factory.mktemp("services")) as running, pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
            mp.setenv(key, running.env()[key])
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"))
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "60"))
        yield running


@pytest.fixture(scope="session")
def mlflow_server(services):
    """The server's URI."""
    return services.tracking_uri
