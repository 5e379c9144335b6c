"""Model references: a pipeline folder, or a version in the MLflow model registry.

`models:/t2v-stdit@champion` (an alias) and `models:/t2v-stdit/3` (a version) are downloaded once into a cache
keyed by name, version and run (versions are immutable), `$T2V_CACHE` or ~/.cache/t2v-pipeline/models, checked
against the record of its files made at registration (model.inference.integrity) on every load, and the pipeline
folder inside is returned.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from components.common.files import atomic_dir

MODEL_NAME = "t2v-stdit"
PIPELINE_ARTIFACT = "pipeline"  # the pyfunc's artifact key (model.inference.pyfunc): artifacts/pipeline/
# an evaluation's comparison with the baseline (the registry's champion), beside its metrics.json and not in it:
# which version is champion depends on the registry, not on the evaluation's inputs (DVC tracks metrics.json only)
BASELINE_FILE = "baseline.json"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class NotRegistered(LookupError, ValueError):
    """A registry URI names a model, alias or version that does not exist (a ValueError: bad input)."""


def is_registry_uri(spec: str) -> bool:
    return spec.startswith("models:/")


def client(tracking_uri: str | None = None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_version(uri: str, tracking_uri: str | None = None):
    """The ModelVersion a registry URI names; NotRegistered when the model, alias or version does not exist."""
    from mlflow.exceptions import MlflowException

    match = _URI.match(uri)
    if not match:
        raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    name, alias, version = match["name"], match["alias"], match["version"]
    from mlflow.tracking import is_tracking_uri_set

    if tracking_uri is None and not is_tracking_uri_set():  # MLflow's default would be a new ./mlflow.db
        raise ValueError(
            f"{uri} names a registered version, but no registry is given: pass --tracking-uri URI or set "
            "MLFLOW_TRACKING_URI (in a cluster the mlflow-credentials Secret sets it), or pass a pipeline folder"
        )
    try:
        if alias:
            return client(tracking_uri).get_model_version_by_alias(name, alias)
        return client(tracking_uri).get_model_version(name, version)
    except MlflowException as err:
        from components.common.tracking import access_denied

        if denied := access_denied(err, tracking_uri or "the tracking URI"):
            raise denied from None
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise NotRegistered(
            f"{uri}: the registry has no {what} of model {name!r} ({err.error_code}); register one with "
            "`t2v register`, check --tracking-uri, or pass a pipeline folder"
        ) from err


def cache_root() -> Path:
    base = (
        os.environ.get("T2V_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "t2v-pipeline"
    )
    return Path(base) / "models"


def pipeline_folder(spec: str, tracking_uri: str | None = None) -> tuple[Path, dict]:
    """(pipeline folder, what it is) for a folder or a registry URI."""
    if not is_registry_uri(spec):
        folder = Path(spec)
        if not (folder / "model_index.json").exists():
            raise ValueError(
                f"{spec} is neither a pipeline folder (no model_index.json; use <train out_dir>/pipeline) nor a "
                "registry URI (models:/t2v-stdit@champion)"
            )
        return folder, {"folder": str(folder)}
    import mlflow

    version = resolve_version(spec, tracking_uri)
    if tracking_uri:  # models:/ downloads go through the process-wide registry URI
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    info = {"name": version.name, "version": str(version.version), "run_id": version.run_id, "uri": spec}
    target = cache_root() / version.name / f"{version.version}-{(version.run_id or 'norun')[:12]}"
    if not (target / "MLmodel").exists():
        with atomic_dir(target) as tmp:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{version.name}/{version.version}", dst_path=str(tmp), tracking_uri=tracking_uri
            )
    from model.inference.integrity import verify_model_folder

    # every load, the cached copy too: nothing of it is read before its files match the registration record
    verify_model_folder(target, client(tracking_uri), f"{spec} (version {version.version})", version.run_id)
    folder = target / "artifacts" / PIPELINE_ARTIFACT
    if not (folder / "model_index.json").exists():
        raise ValueError(f"{spec} (version {version.version}) holds no T2V pipeline; register it with `t2v register`")
    return folder, info


def load_pipeline(spec: str, tracking_uri: str | None = None, device: str = "cpu"):
    """(T2VPipeline on `device`, what it is) for a pipeline folder or a registry URI, loaded through diffusers'
    DiffusionPipeline.from_pretrained (model.inference.pipeline.load_pipeline)."""
    from model.inference.loading import load_pipeline as load

    folder, info = pipeline_folder(spec, tracking_uri)
    return load(folder).to(device), info
