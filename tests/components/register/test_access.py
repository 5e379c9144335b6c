"""The registry as a trust boundary, against the real `mlflow server --app-name basic-auth` (PostgreSQL, S3):
anonymous requests are refused, readers read and load but change nothing, only the pipeline identity registers and
moves the champion, wrong credentials say what to set; a registered version holds no pickle and loads, from its own
code, in a fresh process, through the Python API and `mlflow models predict`."""

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version as installed_version
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from packaging.requirements import Requirement

from components.register.register import RegisterConfig, register
from pipelines.access import provision

NAME = "t2v-stdit"
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".cloudpickle"}


@pytest.fixture(scope="module")
def reader(services):
    """A read-only user, as an operator makes one (python -m pipelines.access)."""
    user = ("viewer", "viewer-" + os.urandom(8).hex())
    provision(services.tracking_uri, services.admin, (services.pipeline_user, services.pipeline_password), [user])
    return user


def as_user(monkeypatch, user: tuple[str, str] | None) -> None:
    for key, value in zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), user or (None, None), strict=True):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)


def clean_env(**extra) -> dict[str, str]:
    """A fresh process's environment: no project on PYTHONPATH, the given MLflow identity."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_USERNAME")}
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    return {**env, **extra}


def test_anonymous_requests_are_refused(services, registry):
    base = services.tracking_uri
    for method, path, body in (
        ("GET", f"/api/2.0/mlflow/registered-models/alias?name={NAME}&alias=champion", None),
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": "intruder"}),
        ("POST", "/api/2.0/mlflow/registered-models/alias", {"name": NAME, "alias": "champion", "version": "2"}),
    ):
        response = requests.request(method, base + path, json=body, timeout=10)
        assert response.status_code == 401, (method, path, response.text)
    assert requests.get(f"{base}/health", timeout=10).status_code == 200  # probes need no identity
    assert MlflowClient(base).get_model_version_by_alias(NAME, "champion").version == "3"


def test_a_reader_can_read_but_not_move_the_champion_nor_delete(services, registry, reader, monkeypatch):
    as_user(monkeypatch, reader)
    client = MlflowClient(services.tracking_uri)
    assert client.get_model_version_by_alias(NAME, "champion").version == "3"
    for change in (
        lambda: client.set_registered_model_alias(NAME, "champion", "2"),
        lambda: client.delete_registered_model_alias(NAME, "champion"),
        lambda: client.delete_model_version(NAME, "2"),
        lambda: client.delete_registered_model(NAME),
        lambda: client.update_model_version(NAME, "3", description="edited"),
    ):
        with pytest.raises(MlflowException) as refused:
            change()
        assert refused.value.get_http_status_code() == 403
    as_user(monkeypatch, (services.pipeline_user, services.pipeline_password))
    assert client.get_model_version_by_alias(NAME, "champion").version == "3"
    assert [v.version for v in client.search_model_versions(f"name='{NAME}'")] == ["3", "2", "1"]


def test_the_model_belongs_to_the_admin_and_the_pipeline_may_edit_it(services, registry, monkeypatch):
    import mlflow.server.auth.client  # noqa: F401 (the auth REST client needs its routes registered)

    response = requests.get(
        f"{services.tracking_uri}/api/3.0/mlflow/users/permissions/get",
        params={"username": services.pipeline_user, "resource_type": "registered_model", "resource_id": NAME},
        auth=services.admin,
        timeout=10,
    )
    assert response.ok and "EDIT" in response.text
    as_user(monkeypatch, (services.pipeline_user, services.pipeline_password))
    with pytest.raises(MlflowException) as refused:  # EDIT: registers and promotes (test_register), never deletes
        MlflowClient(services.tracking_uri).delete_model_version(NAME, "2")
    assert refused.value.get_http_status_code() == 403


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, r"without credentials \(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD are not set\)"),
        (("t2v", "wrong-password"), r"as user 't2v' \(401 unauthenticated\): set MLFLOW_TRACKING_USERNAME and "
         r"MLFLOW_TRACKING_PASSWORD"),
        (("viewer", None), r"denied user 'viewer' .*403.*run it as the pipeline identity, with "
         r"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD set"),
    ],
)  # fmt: skip
def test_wrong_credentials_name_the_variables_to_set(services, registry, reader, monkeypatch, tmp_path, user, expected):
    _, _, root = registry
    if user and user[1] is None:
        user = reader
    # an evaluation against the current champion, so that only the credentials stand in the way
    evaluation = tmp_path / "evaluation"
    shutil.copytree(root / "eval-worse", evaluation)
    (evaluation / "decision.json").unlink()  # the earlier registration's
    comparison = json.loads((evaluation / "baseline.json").read_text())
    comparison["baseline"]["model_info"]["version"] = "3"
    (evaluation / "baseline.json").write_text(json.dumps(comparison))
    as_user(monkeypatch, user)
    before = MlflowClient(services.tracking_uri)
    cfg = RegisterConfig(model=str(root / "worse"), evaluation=str(evaluation), tracking_uri=services.tracking_uri)
    with pytest.raises(ValueError, match=expected):  # a reader may read: it is stopped at its first write
        register(cfg)
    as_user(monkeypatch, (services.pipeline_user, services.pipeline_password))
    assert len(before.search_model_versions(f"name='{NAME}'")) == 3
    assert not (evaluation / "decision.json").exists()


def artifact_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def is_pickle(path: Path) -> bool:
    """A pickle by name, by its protocol header, or a torch zip archive (which holds one)."""
    head = path.read_bytes()[:4]
    if path.suffix in PICKLE_SUFFIXES or (head[:2] == b"PK" and path.suffix not in {".zip"}):
        return True
    return path.suffix != ".safetensors" and head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}


def test_a_version_holds_no_pickle_and_its_requirements_resolve(services, registry, tmp_path):
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/3", dst_path=str(tmp_path / "v3")))
    files = artifact_files(local)
    print("version 3 holds:", *files, sep="\n  ")
    assert [f for f in files if is_pickle(local / f)] == []
    assert "python_model.pkl" not in files and "model_code.py" in files
    assert {
        "code/model/inference/pyfunc.py",
        "code/model/inference/pipeline.py",
        "code/model/networks/stdit.py",
    } <= set(files)
    assert not any("__pycache__" in f for f in files)
    weights = [f for f in files if f.startswith("artifacts/pipeline/") and f.endswith(".safetensors")]
    assert any(f.startswith("artifacts/pipeline/transformer/") for f in weights)
    flavour = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavour["model_code_path"].endswith("model_code.py") and flavour["code"] == "code"
    assert "python_model" not in flavour  # the key of a pickled PythonModel object

    requirements = [Requirement(line) for line in (local / "requirements.txt").read_text().split() if line]
    names = {r.name.lower() for r in requirements}
    assert "t2v-pipeline" not in names and {"torch", "diffusers", "mlflow"} <= names
    for requirement in requirements:  # each one a public release, the one installed here
        assert requirement.specifier.contains(installed_version(requirement.name).split("+")[0]), requirement
    check = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-q", "-r", local / "requirements.txt"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


LOAD = """
import sys, mlflow
model = mlflow.pyfunc.load_model("models:/t2v-stdit@champion")
videos = model.predict(["a red circle moves left"], params={"num_inference_steps": 2})
print(sys.modules["model"].__file__, "components" in sys.modules, videos.shape, videos.dtype, sep="|")
"""


def test_a_reader_loads_the_champion_in_a_fresh_process_from_its_own_code(services, registry, reader, tmp_path):
    env = clean_env(MLFLOW_TRACKING_USERNAME=reader[0], MLFLOW_TRACKING_PASSWORD=reader[1])
    out = subprocess.run([sys.executable, "-c", LOAD], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    model_file, components, shape, dtype = out.stdout.strip().splitlines()[-1].split("|")
    root = Path(__file__).resolve().parents[3]
    assert "/code/model/" in model_file and not Path(model_file).is_relative_to(root)  # the version's own code
    assert components == "False"  # loading imports the model package, not the project's steps
    assert shape.startswith("(1, ") and "uint8" in dtype


def test_mlflow_models_predict_serves_the_champion(services, registry, tmp_path):
    request = tmp_path / "input.json"
    request.write_text(json.dumps({"inputs": ["a blue square moves up"], "params": {"num_inference_steps": 2}}))
    env = clean_env(**{k: services.env()[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    command = [Path(sys.executable).with_name("mlflow"), "models", "predict", "-m", f"models:/{NAME}@champion",
               "-i", request, "-t", "json", "-o", tmp_path / "out.json", "--env-manager", "local"]  # fmt: skip
    out = subprocess.run([str(c) for c in command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    videos = np.asarray(json.loads((tmp_path / "out.json").read_text())["predictions"])
    assert videos.shape[0] == 1 and videos.shape[-1] == 3 and videos.min() >= 0 and videos.max() <= 255


def test_t2v_pipeline_users_creates_readers_and_rotates_the_pipelines_password(services, registry, monkeypatch, capsys):
    from t2v.cli import main

    uri, search = services.tracking_uri, f"{services.tracking_uri}/api/2.0/mlflow/registered-models/search"
    for key in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "T2V_PIPELINE_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    assert main(["pipeline", "users", uri, "--reader", "bob"]) == 2
    missing = "set MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD, T2V_PIPELINE_PASSWORD"
    assert missing in capsys.readouterr().out
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", services.admin[0])
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", services.admin[1])
    rotated = "rotated-" + os.urandom(8).hex()
    monkeypatch.setenv("T2V_PIPELINE_PASSWORD", rotated)
    try:
        assert main(["pipeline", "users", uri, "--pipeline-user", services.pipeline_user, "--reader", "bob"]) == 0
        name, password = capsys.readouterr().out.split()
        assert name == "bob" and requests.get(search, auth=("bob", password), timeout=10).status_code == 200
        old = (services.pipeline_user, services.pipeline_password)
        assert requests.get(search, auth=old, timeout=10).status_code == 401
        assert requests.get(search, auth=(services.pipeline_user, rotated), timeout=10).status_code == 200
    finally:  # the other tests go on with the pipeline's first password
        monkeypatch.setenv("T2V_PIPELINE_PASSWORD", services.pipeline_password)
        assert main(["pipeline", "users", uri, "--pipeline-user", services.pipeline_user]) == 0
