"""A registered version cannot change behind the registry's back: its files' sha256 are recorded at registration
where the pipeline identity cannot rewrite them (the register run's parameter), and every loader (`t2v generate`,
`t2v evaluate`, the pyfunc, `mlflow models predict`) refuses a version whose files differ, naming the file. Against
the real local services; a version of its own name, so that the other tests' versions stay untouched."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from components.common.registry import pipeline_folder
from components.evaluate.config import EvalConfig
from components.evaluate.evaluate import evaluate
from components.register.register import RegisterConfig, register
from model.inference.integrity import LISTING, PARAM, TamperedVersion, text_sha256
from pipelines.access import provision
from t2v.cli import main
from tests.components.register.test_access import clean_env

NAME = "t2v-integrity"
URI = f"models:/{NAME}/1"
CONFIG = "artifacts/pipeline/transformer/config.json"  # a file of the version, as it lies in the model's folder


@pytest.fixture(scope="module")
def version(services, registry):
    """Version 1 of NAME: the registry fixture's first model, registered again under this name."""
    _, _, root = registry
    provision(services.tracking_uri, services.admin, (services.pipeline_user, services.pipeline_password), model=NAME)
    cfg = RegisterConfig(model=str(root / "first"), evaluation=str(root / "eval-first"), name=NAME,
                         tracking_uri=services.tracking_uri, decision_path=str(root / "integrity.json"))  # fmt: skip
    register(cfg)
    mlflow.set_tracking_uri(services.tracking_uri)
    return MlflowClient(services.tracking_uri).get_model_version(NAME, "1")


def model_location(services, version) -> str:
    """Where the version's files lie: its logged model's artifact location (mlflow-artifacts:/...)."""
    client = MlflowClient(services.tracking_uri)
    return client.get_logged_model(version.source.removeprefix("models:/")).artifact_location


def fresh_cache(tmp_path, monkeypatch) -> None:
    """Registry downloads into a new, empty cache: each load below fetches the version afresh."""
    monkeypatch.setenv("T2V_CACHE", str(tmp_path / f"cache-{len(list(tmp_path.glob('cache-*')))}"))


def what_loaders_say(services, toy_data, tmp_path, monkeypatch, capsys, predict: bool = False) -> dict[str, str]:
    """Each loader on version 1 now, each from a fresh download: "" when it loaded, else what it said."""
    said = {}
    fresh_cache(tmp_path, monkeypatch)
    args = ["generate", "a red circle", "--model", URI, "--tracking-uri", services.tracking_uri,
            "--out", str(tmp_path / "video.mp4"), "--steps", "1", "--frames", "1", "--no-progress"]  # fmt: skip
    capsys.readouterr()
    code, shown = main(args), capsys.readouterr()
    said["generate"] = "" if code == 0 else shown.out + shown.err
    evaluation = EvalConfig(model=URI, data=str(toy_data), out_dir=str(tmp_path / "eval"), max_prompts=1, steps=1,
                            val_timesteps=1, val_max_samples=1, tracking_uri=services.tracking_uri,
                            progress=False)  # fmt: skip
    loaders = {"evaluate": lambda: evaluate(evaluation), "pyfunc": lambda: mlflow.pyfunc.load_model(URI)}
    for loader, load in loaders.items():
        try:
            load()
            said[loader] = ""
        except TamperedVersion as err:
            said[loader] = str(err)
    if predict:
        request = tmp_path / "input.json"
        request.write_text(json.dumps({"inputs": ["a blue square"], "params": {"num_inference_steps": 1}}))
        env = clean_env(**{k: services.env()[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
        command = [Path(sys.executable).with_name("mlflow"), "models", "predict", "-m", URI, "-i", request,
                   "-t", "json", "-o", tmp_path / "out.json", "--env-manager", "local"]  # fmt: skip
        out = subprocess.run([str(c) for c in command], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        said["mlflow models predict"] = "" if out.returncode == 0 else out.stderr[-3000:]
    return said


def loads(services, tmp_path, monkeypatch) -> bool:
    """Whether version 1 downloads afresh and passes the check every loader makes (the untouched version loads, as
    the other tests' versions do with every loader)."""
    fresh_cache(tmp_path, monkeypatch)
    folder, info = pipeline_folder(URI, services.tracking_uri)
    return (folder / "model_index.json").exists() and info["version"] == "1"


def test_the_version_records_its_files_where_the_pipeline_cannot_rewrite_them(services, version, tmp_path, monkeypatch):
    assert loads(services, tmp_path, monkeypatch)  # untouched: it loads as before
    client = MlflowClient(services.tracking_uri)
    listing = Path(client.download_artifacts(version.run_id, LISTING)).read_text()
    assert client.get_run(version.run_id).data.params[PARAM] == text_sha256(listing)
    assert CONFIG in json.loads(listing) and "MLmodel" in json.loads(listing)
    with pytest.raises(Exception, match=r"(?i)changing param values is not allowed"):
        client.log_param(version.run_id, PARAM, "0" * 64)  # as the pipeline identity: MLflow refuses


def test_a_file_changed_in_s3_with_the_servers_keys_is_refused_by_every_loader(
    services, version, toy_data, tmp_path, monkeypatch, capsys
):
    s3 = services.s3_client()
    model_id = version.source.removeprefix("models:/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=services.artifact_bucket)["Contents"]]
    (key,) = [k for k in keys if model_id in k and k.endswith(CONFIG)]
    original = s3.get_object(Bucket=services.artifact_bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=services.artifact_bucket, Key=key, Body=original.replace(b"{", b'{"num_layers": 1, ', 1))
    try:
        said = what_loaders_say(services, toy_data, tmp_path, monkeypatch, capsys, predict=True)
        for loader, words in said.items():
            assert f"{CONFIG} has sha256" in words and "changed after registration" in words, (loader, words)
            assert "MLflow admin can restore it" in words, (loader, words)
        assert f"{URI} (version 1)" in said["generate"]  # which version, by the registry's name
    finally:
        s3.put_object(Bucket=services.artifact_bucket, Key=key, Body=original)
    assert loads(services, tmp_path, monkeypatch)  # restored


def test_a_file_added_or_changed_through_mlflows_api_or_a_changed_record_is_refused(
    services, version, toy_data, tmp_path, monkeypatch, capsys
):
    repo = get_artifact_repository(model_location(services, version))
    extra = tmp_path / "extra.py"
    extra.write_text("print('not registered')\n")
    repo.log_artifact(str(extra), "artifacts/pipeline")  # the pipeline identity: MLflow's API answers 200
    try:
        said = what_loaders_say(services, toy_data, tmp_path, monkeypatch, capsys)
        assert all("artifacts/pipeline/extra.py was added since it was registered" in w for w in said.values()), said
    finally:
        repo.delete_artifacts("artifacts/pipeline/extra.py")
    scheduler = "artifacts/pipeline/scheduler/scheduler_config.json"  # a file of the version, rewritten in place
    (tmp_path / "original").mkdir()
    kept = Path(repo.download_artifacts(scheduler, str(tmp_path / "original")))
    original = kept.read_text()
    changed = tmp_path / "changed" / "scheduler_config.json"
    changed.parent.mkdir()
    changed.write_text(original.replace("{", '{"shift": 9.0, ', 1))
    repo.log_artifact(str(changed), "artifacts/pipeline/scheduler")
    try:
        said = what_loaders_say(services, toy_data, tmp_path, monkeypatch, capsys)
        assert all(f"{scheduler} has sha256" in w for w in said.values()), said
    finally:
        repo.log_artifact(str(kept), "artifacts/pipeline/scheduler")
    assert loads(services, tmp_path, monkeypatch)
    client = MlflowClient(services.tracking_uri)
    listing = Path(client.download_artifacts(version.run_id, LISTING, str(tmp_path))).read_text()
    forged = json.dumps({**json.loads(listing), "artifacts/pipeline/extra.py": "0" * 64})
    client.log_text(version.run_id, forged, LISTING)  # the record itself rewritten: its parameter still stands
    try:
        said = what_loaders_say(services, toy_data, tmp_path, monkeypatch, capsys)
        assert all(f"the record of its files ({LISTING}" in w for w in said.values()), said
    finally:
        client.log_text(version.run_id, listing, LISTING)
    assert loads(services, tmp_path, monkeypatch)
