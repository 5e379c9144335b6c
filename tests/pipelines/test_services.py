"""The loopback services of a cluster run: MLflow on PostgreSQL with its artifacts in S3, and a DVC remote on the
same S3 server, each bucket with keys of its own (the tasks' keys reach the DVC bucket only). One set of servers for
the module, started once."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipelines import services as services_module
from pipelines.services import LocalServices, ServiceError

pytestmark = pytest.mark.slow


@pytest.fixture
def client(services, monkeypatch):
    """An MLflow client of the services' server, whose calls give up after seconds, not minutes."""
    for key, value in services.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # the registry named too: a register step earlier in the same process leaves its server as mlflow's registry URI
    return MlflowClient(services.tracking_uri, registry_uri=services.tracking_uri)


def new_run(client: MlflowClient, name: str) -> str:
    experiment_id = client.create_experiment(name)
    return client.create_run(experiment_id).info.run_id


def test_a_run_lands_in_postgres_and_its_artifact_in_s3(services, client, tmp_path):
    run_id = new_run(client, "artifacts")
    client.log_param(run_id, "lr", "0.001")
    client.log_metric(run_id, "val_loss", 0.5, step=3)
    notes = tmp_path / "notes.txt"
    notes.write_text("stage 1 done\n")
    client.log_artifact(run_id, str(notes))
    client.set_terminated(run_id)

    fresh = MlflowClient(services.tracking_uri)
    run = fresh.get_run(run_id)
    assert run.data.params == {"lr": "0.001"} and run.data.metrics == {"val_loss": 0.5}
    assert run.info.status == "FINISHED"
    downloaded = fresh.download_artifacts(run_id, "notes.txt", str(tmp_path / "back"))
    assert Path(downloaded).read_text() == "stage 1 done\n"
    listed = services.s3_client().list_objects_v2(Bucket=services.artifact_bucket)
    keys = [item["Key"] for item in listed["Contents"]]
    assert f"artifacts/{run.info.experiment_id}/{run_id}/artifacts/notes.txt" in keys


def test_a_tasks_keys_reach_mlflow_artifacts_only_through_the_server_and_write_only_the_dvc_bucket(
    services, client, tmp_path
):
    """Least privilege: the keys a task gets (`env()`, as from the dvc-credentials Secret) are the DVC bucket's; an
    artifact goes through the MLflow server (mlflow-artifacts:/), and writing or deleting a file in MLflow's bucket
    directly is refused, so a task cannot alter a registered version's files."""
    env = services.env()
    assert services.s3_mlflow.secret_key not in env.values() and services.s3_admin.secret_key not in env.values()
    run_id = new_run(client, "least-privilege")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"registered")
    client.log_artifact(run_id, str(weights), "model")
    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied: the client needs no bucket keys
    back = client.download_artifacts(run_id, "model/weights.bin", str(tmp_path / "back"))
    assert Path(back).read_bytes() == b"registered"

    task = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    key = f"artifacts/{run.info.experiment_id}/{run_id}/artifacts/model/weights.bin"
    refused = {
        "put": lambda: task.put_object(Bucket=services.artifact_bucket, Key=key, Body=b"tampered"),
        "delete": lambda: task.delete_object(Bucket=services.artifact_bucket, Key=key),
        "get": lambda: task.get_object(Bucket=services.artifact_bucket, Key=key),
        "list": lambda: task.list_objects_v2(Bucket=services.artifact_bucket),
    }
    for what, call in refused.items():
        with pytest.raises(ClientError) as denied:
            call()
        assert denied.value.response["Error"]["Code"] == "AccessDenied", what
    (error,) = task.delete_objects(Bucket=services.artifact_bucket, Delete={"Objects": [{"Key": key}]})["Errors"]
    assert error["Code"] == "AccessDenied"
    stored = services.s3_client().get_object(Bucket=services.artifact_bucket, Key=key)["Body"].read()
    assert stored == b"registered"  # untouched

    task.put_object(Bucket=services.dvc_bucket, Key="least-privilege/clip.bin", Body=b"data")
    assert task.get_object(Bucket=services.dvc_bucket, Key="least-privilege/clip.bin")["Body"].read() == b"data"
    task.delete_object(Bucket=services.dvc_bucket, Key="least-privilege/clip.bin")
    with pytest.raises(ClientError) as creating:
        task.create_bucket(Bucket="elsewhere")  # buckets are the admin's
    assert creating.value.response["Error"]["Code"] == "AccessDenied"


def test_the_mlflow_servers_keys_reach_its_bucket_only(services):
    server = services.s3_client(services.s3_mlflow)
    server.put_object(Bucket=services.artifact_bucket, Key="probe.txt", Body=b"x")
    server.delete_object(Bucket=services.artifact_bucket, Key="probe.txt")
    with pytest.raises(ClientError) as writing:
        server.put_object(Bucket=services.dvc_bucket, Key="probe.txt", Body=b"x")
    assert writing.value.response["Error"]["Code"] == "AccessDenied"
    config = json.loads((services.root / "seaweedfs" / "s3-identities.json").read_text())
    assert {i["name"]: i["actions"] for i in config["identities"]} == {
        "admin": ["Admin", "Read", "Write", "List", "Tagging"],
        "mlflow": ["Read:mlflow", "Write:mlflow", "List:mlflow"],
        "data": ["Read:dvc", "Write:dvc", "List:dvc"],
    }
    assert (services.root / "seaweedfs" / "s3-identities.json").stat().st_mode & 0o077 == 0  # secret keys


def test_the_server_refuses_anonymous_and_wrong_credentials_and_keeps_its_users_over_a_restart(services, client):
    search = f"{services.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert urlopen_status(search) == 401
    assert urlopen_status(search, (services.pipeline_user, "wrong")) == 401
    assert urlopen_status(search, (services.pipeline_user, services.pipeline_password)) == 200
    services.restart_mlflow()
    assert urlopen_status(search, (services.pipeline_user, services.pipeline_password)) == 200
    assert client.get_registered_model("t2v-stdit").name == "t2v-stdit"  # made by the admin, readable by the pipeline


def urlopen_status(url: str, user: tuple[str, str] | None = None) -> int:
    import requests

    return requests.get(url, auth=user, timeout=10).status_code


def test_a_run_survives_a_restart_of_the_server(services, client):
    run_id = new_run(client, "restart")
    client.log_metric(run_id, "loss", 1.0, step=0)
    services.restart_mlflow()
    assert client.get_run(run_id).info.status == "RUNNING"
    client.log_metric(run_id, "loss", 0.5, step=1)
    history = MlflowClient(services.tracking_uri).get_metric_history(run_id, "loss")
    assert [(metric.step, metric.value) for metric in history] == [(0, 1.0), (1, 0.5)]


def test_calls_fail_fast_while_the_server_is_down_and_work_again_after(services, client):
    run_id = new_run(client, "down")
    services.stop_mlflow()
    try:
        with pytest.raises(MlflowException):
            client.log_metric(run_id, "loss", 1.0)
    finally:
        services.start_mlflow()
    client.log_metric(run_id, "loss", 0.5)
    assert client.get_run(run_id).data.metrics == {"loss": 0.5}


def test_s3_refuses_a_wrong_secret_and_anonymous_requests(services):
    assert {services.artifact_bucket, services.dvc_bucket} <= {
        bucket["Name"] for bucket in services.s3_client().list_buckets()["Buckets"]
    }
    wrong = boto3.client(
        "s3",
        endpoint_url=services.s3_endpoint,
        aws_access_key_id=services.access_key,
        aws_secret_access_key="0" * len(services.secret_key),
        region_name="us-east-1",
    )
    anonymous = boto3.client(
        "s3", endpoint_url=services.s3_endpoint, region_name="us-east-1", config=Config(signature_version=UNSIGNED)
    )
    for client, code in ((wrong, "SignatureDoesNotMatch"), (anonymous, "AccessDenied")):
        with pytest.raises(ClientError) as listing:
            client.list_objects_v2(Bucket=services.dvc_bucket)
        with pytest.raises(ClientError) as writing:
            client.put_object(Bucket=services.dvc_bucket, Key="intruder.txt", Body=b"x")
        assert listing.value.response["Error"]["Code"] == writing.value.response["Error"]["Code"] == code


def test_dvc_pushes_to_and_pulls_from_the_s3_server(services, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    # no AWS_* variables: DVC must find the credentials in .dvc/config.local
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env["DVC_NO_ANALYTICS"] = "1"

    def run(*command):
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True, text=True)

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    services.configure_dvc_remote(repo)
    payload = os.urandom(100_000)
    (repo / "clip.bin").write_bytes(payload)
    run(sys.executable, "-m", "dvc", "add", "-q", "clip.bin")
    run(sys.executable, "-m", "dvc", "push", "-q")
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "clip.bin").unlink()
    run(sys.executable, "-m", "dvc", "pull", "-q")
    assert (repo / "clip.bin").read_bytes() == payload

    listed = services.s3_client().list_objects_v2(Bucket=services.dvc_bucket, Prefix="repo/")
    assert listed["KeyCount"] == 1  # the one file, stored by its hash
    config = (repo / ".dvc" / "config").read_text()
    assert services.s3_endpoint in config and "s3://dvc/repo" in config
    assert services.secret_key not in config and services.access_key not in config
    local = (repo / ".dvc" / "config.local").read_text()
    assert services.secret_key == services.s3_data.secret_key and services.secret_key in local  # the DVC bucket's
    assert services.s3_mlflow.secret_key not in local and services.s3_admin.secret_key not in local


def test_a_missing_program_says_what_to_install():
    with pytest.raises(ServiceError, match=r"no-such-server not found .* install it: pip install it"):
        services_module._program("no-such-server", "it: pip install it")


def test_a_server_that_does_not_come_up_in_time_stops_the_others_and_shows_its_log(tmp_path, monkeypatch):
    monkeypatch.setitem(services_module.TIMEOUTS, "mlflow", 0.5)
    local = LocalServices(tmp_path)
    message = r"(?s)MLflow server did not come up within 0.5 s.*last lines of .*mlflow\.log"
    with pytest.raises(ServiceError, match=message), local:
        pass
    for uri in (local.database_uri, local.s3_endpoint, local.tracking_uri):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", urlsplit(uri).port), timeout=2).close()
