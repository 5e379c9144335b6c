"""Register an evaluated pipeline in the MLflow model registry and decide whether it becomes the champion.

register(cfg):
  1. checks first, so that a refused call changes nothing: the evaluation is of this model, it has the decision
     metric, and when a champion exists the evaluation also holds the champion's numbers (`t2v evaluate
     --baseline models:/<name>@champion`: both models on the same held-out set in the same run)
  2. stages the pipeline folder: small local encoders (under `bundle_max_mb`) are written into it as pipeline
     components, hub ids stay references, large local encoders are referenced by absolute path
  3. logs it as an MLflow pyfunc "from code" (components/register/model_code.py sets model.inference.pyfunc.T2VModel;
     the `model` package travels as the version's code, so it loads without the project installed, and nothing in it is
     unpickled) in a `register` run with the evaluation's metrics and report, and registers a version of `name` with
     lineage tags (git commit, data key, manifest hash, DVC md5, pipeline run id, per-stage configs and runs, evaluation
     run) and a model card as its description
  4. aliases: the new version becomes `challenger`; the first version becomes `champion`; later the champion
     moves only when the challenger beats it on `metric` by more than `margin`. The decision and its numbers go
     to the run, the version's tags and decision.json.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

from components.common.registry import BASELINE_FILE, MODEL_NAME, PIPELINE_ARTIFACT, client
from components.common.settings import setting
from components.common.tracking import access_denied, check_access, experiment_id, git_commit
from components.register.decision import decide, decision_metric, lower_is_better

log = logging.getLogger(__name__)

TAG_LIMIT = 5000  # MLflow's model-version tag value limit
RECORD_FILE = "registered.json"  # beside the decision
ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("model",)  # what a version carries as its code (Python files only): the network, pipeline, pyfunc
MODEL_CODE = Path(__file__).with_name("model_code.py")
# what loading a version needs from a package index: the `model` package's imports and the pyfunc's
REQUIREMENTS = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "sentencepiece", "einops",
                "numpy", "pandas", "pyyaml", "huggingface-hub")  # fmt: skip
HEADLINE = ("val_loss", "clip_score", "fvd", "flicker")  # the evaluation's numbers the model card leads with


@dataclass(frozen=True)
class RegisterConfig:
    model: str = setting("data/train/stage3/pipeline", "pipeline folder to register")
    evaluation: str = setting("outputs/evaluate", "`t2v evaluate` out_dir (metrics.json)")
    name: str = setting(MODEL_NAME, "registered model name")
    tracking_uri: str | None = setting(None, "MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI)")
    experiment: str = setting("t2v-pipeline", "MLflow experiment of the register run")
    metric: str = setting("val_loss", "decision metric from metrics.json")
    mode: str = setting("auto", "min, max, or auto: min for losses, FVD and flicker, max otherwise")
    margin: float = setting(0.0, "the challenger must be better by more than this (in the metric's units)")
    pipeline_run_id: str | None = setting(None, "the KFP run that produced the model (default: $KFP_RUN_ID)")
    bundle_max_mb: float = setting(512.0, "local encoders up to this size are copied into the version")
    dvc_lock: str = setting("dvc.lock", "for the data's DVC md5 (outside DVC it is computed from the data folder)")
    decision_path: str | None = setting(None, "decision JSON (default: <evaluation>/decision.json)")

    def __post_init__(self):
        if self.mode not in ("auto", "min", "max"):
            raise ValueError(f"mode={self.mode!r} must be auto, min or max")


# ------------------------------------------------------------------------------------------------- lineage


def dvc_md5(lock: Path, folder: str) -> str | None:
    """The md5 DVC recorded for the output that holds `folder` (the precompute root or the folder itself)."""
    import yaml

    if not lock.exists():
        return None
    target = Path(folder)
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            path = Path(out["path"])
            if path in (target, *target.parents) and str(path) != ".":
                return out.get("md5")
    return None


def folder_md5(folder: str | Path) -> str | None:
    """The md5 `dvc add` gives the folder ("<md5>.dir"), computed with DVC's own hashing: a run outside DVC (a
    KFP task) names its data as DVC will once the folder is added and pushed. None when there is no such folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    _, _, tree = build(HashFileDB(MemoryFileSystem(), "/odb"), str(folder.resolve()), LocalFileSystem(), "md5",
                       dry_run=True)  # fmt: skip
    return tree.hash_info.value


def evaluation_run_id(folder: Path) -> str:
    """The MLflow run of an evaluation (its tracking.json), "" when it was not tracked."""
    path = folder / "tracking.json"
    return str(json.loads(path.read_text()).get("mlflow_run_id") or "") if path.exists() else ""


def read_lineage(pipeline: Path) -> tuple[list[dict], list[dict]]:
    """(import records, training stage records) of a pipeline folder's lineage.json, oldest first."""
    path = pipeline / "lineage.json"
    records = json.loads(path.read_text()) if path.exists() else []
    return [r for r in records if "imported_from" in r], [r for r in records if "imported_from" not in r]


def lineage_tags(cfg: RegisterConfig, pipeline: Path, evaluation: dict) -> dict[str, str]:
    data = evaluation["data"]
    tags = {
        "git_commit": git_commit() or "",
        "data_key": str(data.get("key") or ""),
        "manifest_sha256": str(data.get("manifest_sha256") or ""),
        "data_dvc_md5": dvc_md5(Path(cfg.dvc_lock), data["folder"]) or folder_md5(data["folder"]) or "",
        "data_folder": str(data["folder"]),
        "pipeline_run_id": cfg.pipeline_run_id or os.environ.get("KFP_RUN_ID", ""),
        "evaluation_run_id": evaluation_run_id(Path(cfg.evaluation)),
    }
    imports, stages = read_lineage(pipeline)
    for record in imports:  # weights trained elsewhere (Open-Sora's releases): the file and its hash
        tags["imported_from"], tags["imported_sha256"] = record["imported_from"], record["checkpoint_sha256"]
    for stage in stages:
        n = stage["stage"]
        config = json.dumps(stage["config"], sort_keys=True)
        tags[f"stage{n}_config"] = config if len(config) <= TAG_LIMIT else config[: TAG_LIMIT - 3] + "..."
        tags[f"stage{n}_run_id"] = str(stage.get("mlflow_run_id") or "")
        tags[f"stage{n}_export_sha256"] = stage.get("export_sha256", "")
        tags[f"stage{n}_steps"] = str(stage.get("steps", ""))
    return {k: v for k, v in tags.items() if v}


# ------------------------------------------------------------------------------------------------- staging


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def stage_pipeline(pipeline: Path, dest: Path, bundle_max_mb: float) -> dict[str, str]:
    """Copy the pipeline folder to `dest`, writing small local encoders into it as pipeline components; returns
    {spec key: original spec} of those written or re-pointed."""
    from model.inference.folder import write_encoder

    shutil.copytree(pipeline, dest)
    index_path = dest / "model_index.json"
    index = json.loads(index_path.read_text())
    originals, small = {}, []
    for key, role in (("vae_spec", "vae"), ("text_encoder_spec", "text_encoder")):
        spec = index.get(key)
        if not spec or not Path(spec).is_dir():
            continue  # a hub id, a built-in spec such as none:4, or an encoder the folder already holds
        originals[key] = spec
        if _size_mb(Path(spec)) <= bundle_max_mb:
            small.append(role)
        else:
            index[key] = str(Path(spec).resolve())
            log.warning("%s (%s) is larger than %.0f MB: referenced by absolute path", role, spec, bundle_max_mb)
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True))
    for role in small:
        write_encoder(dest, role)
    return originals


def stage_code(dest: Path) -> list[str]:
    """Copy the project's Python files (CODE_PACKAGES, no caches) under `dest`; the folders, as MLflow code paths."""
    paths = []
    for package in CODE_PACKAGES:
        for source in sorted((ROOT / package).rglob("*.py")):
            target = dest / source.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        paths.append(str(dest / package))
    return paths


def requirements() -> list[str]:
    """REQUIREMENTS pinned to the installed versions, as a package index names them (a local build's label, such as
    torch's +cpu, dropped)."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={installed_version(name).split('+')[0]}")
        except PackageNotFoundError:
            raise ValueError(
                f"{name} is not installed, and a registered version needs it: pip install {name}"
            ) from None
    return pins


def model_card(pipeline: Path, evaluation: dict, decision: dict) -> str:
    """The version's description: per stage its data, clips, steps and shapes; the evaluation's headline numbers
    (and the champion's beside them); the decision."""
    imports, stages = read_lineage(pipeline)
    lines = [f"Text-to-video STDiT pipeline, {len(stages)} training stage(s).", ""]
    for record in imports:
        lines += [f"Imported from {record['imported_from']} ({record['format']}, sha256 "
                  f"{record['checkpoint_sha256']}): trained elsewhere, by no run of this pipeline.", ""]  # fmt: skip
    lines.append("Training:" if stages else "Training: none here.")
    for stage in stages:
        shapes = ", ".join(f"{shape} ({n})" for shape, n in (stage.get("shapes") or {}).items()) or "not recorded"
        clips = stage.get("clips", "?")
        lines.append(f"- stage {stage['stage']}: data {stage.get('data_key') or '?'}, {clips} clips, "
                     f"{stage.get('steps', '?')} steps; frames x height x width (clips): {shapes}")  # fmt: skip
    metrics, baseline = evaluation["metrics"], (evaluation.get("baseline") or {}).get("metrics") or {}
    data = evaluation["data"]
    lines += ["", f"Evaluation on the held-out clips of {data.get('key') or data['folder']}:"]
    ours, theirs = evaluation.get("objective"), (evaluation.get("baseline") or {}).get("objective")
    for name in [m for m in HEADLINE if m in metrics] or sorted(metrics)[:4]:
        label, champion = name, f" (champion: {baseline[name]:.4g})" if name in baseline else ""
        if "loss" in name and ours:  # a loss is the objective's own: say which, and compare like with like only
            label = f"{name} ({ours})"
            if champion and ours != theirs:
                champion = f" (champion's {theirs} loss: {baseline[name]:.4g}, not comparable)"
        lines.append(f"- {label}: {float(metrics[name]):.4g}{champion}")
    alias = "champion and challenger" if decision["promoted"] else "challenger"
    lines += ["", f"Decision: {alias}, {decision['reason']}."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- register


def _champion(tracking_uri: str, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_model_version_by_alias(name, "champion")
    except MlflowException as err:
        if denied := access_denied(err, tracking_uri):
            raise denied from None
        return None


def _same_model(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def register(cfg: RegisterConfig) -> dict:
    """Register `cfg.model`; returns the decision (also written to decision.json)."""
    import mlflow

    tracking_uri = cfg.tracking_uri or mlflow.get_tracking_uri()
    pipeline = Path(cfg.model)
    if not (pipeline / "model_index.json").exists():
        raise ValueError(f"{pipeline} is not a pipeline folder (no model_index.json); use <train out_dir>/pipeline")
    if not isinstance(json.loads((pipeline / "model_index.json").read_text()).get("_class_name"), list):
        raise ValueError(
            f"{pipeline} is in the earlier pipeline format: re-save it with T2VPipeline.from_pretrained(folder)"
            ".save_pretrained(new_folder), or export it again with `t2v train`, then register the new folder"
        )
    metrics_path = Path(cfg.evaluation) / "metrics.json"
    if not metrics_path.exists():
        raise ValueError(f"{metrics_path} not found: run `t2v evaluate --model {pipeline} --out-dir {cfg.evaluation}`")
    evaluation = json.loads(metrics_path.read_text())
    comparison = metrics_path.with_name(BASELINE_FILE)  # the champion's numbers from the same evaluate run
    evaluation["baseline"] = json.loads(comparison.read_text())["baseline"] if comparison.exists() else None
    if not _same_model(evaluation["model"], str(pipeline)):
        raise ValueError(f"{metrics_path} evaluates {evaluation['model']}, not {pipeline}: evaluate this model first")
    if cfg.metric not in evaluation["metrics"]:
        raise ValueError(f"metric {cfg.metric!r} is not in {metrics_path}; it has {sorted(evaluation['metrics'])}")
    lower = lower_is_better(cfg.metric, cfg.mode)
    check_access(client(tracking_uri), tracking_uri)
    champion = _champion(tracking_uri, cfg.name)
    baseline = evaluation.get("baseline")
    if champion is not None:
        version = (baseline or {}).get("model_info", {}).get("version")
        if version != str(champion.version):
            raise ValueError(
                f"{cfg.name}'s champion is version {champion.version} but {metrics_path} compares with "
                f"{version or 'no baseline'}: run `t2v evaluate ... --baseline models:/{cfg.name}@champion` so both "
                "are evaluated on the same held-out set, then register"
            )
        if cfg.metric not in baseline["metrics"]:
            raise ValueError(f"the baseline in {metrics_path} has no {cfg.metric!r}")
    metric, note = decision_metric(cfg.metric, evaluation, baseline if champion is not None else None)
    if note:
        log.warning("%sdecided on %s", note, metric)
        cfg, lower = replace(cfg, metric=metric), lower_is_better(metric, "auto")

    pins = requirements()
    try:
        decision, tags = _log_and_decide(cfg, tracking_uri, pipeline, evaluation, champion, baseline, lower, pins, note)
    except Exception as err:
        denied = access_denied(err, tracking_uri)
        if denied is not None:
            raise denied from err
        raise
    path = Path(cfg.decision_path or Path(cfg.evaluation) / "decision.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(decision, indent=2))
    # what was registered, without the registry's answer (version numbers and run ids depend on what it held
    # before): a record the inputs determine, which DVC tracks as the stage's output
    data = ("data_key", "manifest_sha256", "data_dvc_md5")
    record = {"name": cfg.name, "metric": cfg.metric, "value": decision["challenger_value"]}
    record.update({k: tags.get(k, "") for k in data})
    (path.parent / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return decision


def record_files(name: str, version: str, tracking_uri: str) -> None:
    """Record what the version holds, as the registry serves it (model.inference.integrity): the listing of its
    files' sha256 as an artifact of the active register run, the listing's own sha256 as the run's parameter."""
    import mlflow

    from model.inference.integrity import LISTING, PARAM, file_digests, listing_text, text_sha256

    with tempfile.TemporaryDirectory(prefix="t2v-record-") as tmp:
        root = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp, tracking_uri=tracking_uri)
        text = listing_text(file_digests(root))
    mlflow.log_text(text, LISTING)
    mlflow.log_param(PARAM, text_sha256(text))


def _log_and_decide(cfg: RegisterConfig, tracking_uri: str, pipeline: Path, evaluation: dict, champion, baseline,
                    lower: bool, pins: list[str], note: str = "") -> tuple[dict, dict[str, str]]:  # fmt: skip
    """Log the register run and the model version, set the aliases; (decision, lineage tags)."""
    import mlflow
    from mlflow.models import infer_signature

    from model.inference.pyfunc import DEFAULT_PARAMS

    c = client(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="t2v-register-") as tmp:
        staged = Path(tmp) / PIPELINE_ARTIFACT
        bundled = stage_pipeline(pipeline, staged, cfg.bundle_max_mb)
        code_paths = stage_code(Path(tmp) / "code")
        tags = lineage_tags(cfg, pipeline, evaluation)
        with mlflow.start_run(experiment_id=experiment_id(c, cfg.experiment, tracking_uri), run_name="register") as run:
            mlflow.set_tags({"step": "register", **{k: v[:TAG_LIMIT] for k, v in tags.items()}})
            mlflow.log_params({k: str(v) for k, v in asdict(cfg).items() if k != "tracking_uri"})
            mlflow.log_metrics({k.replace("@", "_"): float(v) for k, v in evaluation["metrics"].items()})
            for name in ("report.html", "metrics.json"):
                if (Path(cfg.evaluation) / name).exists():
                    mlflow.log_artifact(str(Path(cfg.evaluation) / name), "evaluation")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),  # models from code: the version holds no pickled object
                code_paths=code_paths,
                artifacts={PIPELINE_ARTIFACT: str(staged)},
                signature=infer_signature(["a prompt"], params=DEFAULT_PARAMS),
                pip_requirements=pins,
                registered_model_name=cfg.name,
            )
            version = str(info.registered_model_version)
            record_files(cfg.name, version, tracking_uri)
            for key, value in {**tags, **{f"bundled_{k}": v for k, v in bundled.items()}}.items():
                c.set_model_version_tag(cfg.name, version, key, value[:TAG_LIMIT])
            c.set_registered_model_alias(cfg.name, "challenger", version)

            value = float(evaluation["metrics"][cfg.metric])
            decision = {
                "name": cfg.name,
                "version": version,
                "metric": cfg.metric,
                "lower_is_better": lower,
                "margin": cfg.margin,
                "challenger_value": value,
                "register_run_id": run.info.run_id,
            }
            if champion is None:
                decision.update(champion_version=None, champion_value=None, promoted=True, reason="first version")
            else:
                best = float(baseline["metrics"][cfg.metric])
                promoted = decide(value, best, lower=lower, margin=cfg.margin)
                better = "beats" if promoted else "does not beat"
                decision.update(
                    champion_version=str(champion.version),
                    champion_value=best,
                    promoted=promoted,
                    reason=f"{note}{cfg.metric} {value:.6g} {better} champion's {best:.6g} by more than {cfg.margin:g}",
                )
            if decision["promoted"]:
                c.set_registered_model_alias(cfg.name, "champion", version)
            c.set_model_version_tag(cfg.name, version, "decision", decision["reason"])
            c.update_model_version(cfg.name, version, description=model_card(pipeline, evaluation, decision))
            mlflow.set_tags({"decision": decision["reason"], "promoted": str(decision["promoted"])})
            if decision["champion_value"] is not None:
                mlflow.log_metric("champion_value", decision["champion_value"])
            mlflow.log_dict(decision, "decision.json")
    return decision, tags
