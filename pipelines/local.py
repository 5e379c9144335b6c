"""Run the DAG on this machine through kfp.local's SubprocessRunner: the same pipeline, tasks as local processes
in this Python environment, artifacts under <root>/kfp (Kubernetes settings are ignored locally)."""

import json
from pathlib import Path

import yaml

TOY_RECIPE = "params.yaml"  # the toy world's recipe, which `dvc repro` reads too
TINY_MODELS = "data/models/"  # where DVC's tiny-models stage writes the tiny encoders a toy recipe names


def split_settings(items: list[str], parameters: tuple[str, ...]) -> tuple[dict, list[str]]:
    """`--set` items: pipeline parameters by name (source=..., tracking_uri=...), the rest recipe overrides
    (section.key=value)."""
    arguments, overrides = {}, []
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected name=value, e.g. --set source=s3://bucket/videos/")
        key, value = item.split("=", 1)
        if key in parameters:
            arguments[key] = value
        elif "." in key:
            overrides.append(item)
        else:
            raise ValueError(
                f"--set {item!r}: not a pipeline parameter {list(parameters)} nor a recipe setting (section.key=value, "
                "e.g. stage2.max_steps=100)"
            )
    return arguments, overrides


def local_arguments(root: Path, recipe: str = TOY_RECIPE, overrides: list[str] = (), **parameters) -> dict:
    """Pipeline arguments for a run under `root`: the recipe as text, its overrides, a work folder and a local MLflow
    store there. A recipe that names the tiny models (data/models/, as the toy one does) gets them built under
    <root>/models instead."""
    from components.common.settings import read_recipe, sections_of

    root = root.resolve()
    values = read_recipe(recipe)
    items = list(overrides)
    encoder = str(sections_of(values, ("precompute",)).get("text_encoder", ""))
    if encoder.startswith(TINY_MODELS):
        from components.common.toy.tiny import build_tiny_t5

        t5 = root / "models" / encoder.removeprefix(TINY_MODELS)
        if not (t5 / "config.json").exists():
            build_tiny_t5(t5, seed=0)
        items.insert(0, f"precompute.text_encoder={t5}")
    return {"recipe": yaml.safe_dump(values, sort_keys=False), "overrides": json.dumps(items),
            "workdir": str(root / "work"), "tracking_uri": f"sqlite:///{root / 'mlflow.db'}", **parameters}  # fmt: skip


def run_local(arguments: dict, root: Path, models: Path | None = None):
    """Run the whole DAG with `arguments`; returns kfp.local's result for the pipeline. `models`: the folder that
    stands in for the models volume (HF_HOME=<models>/hf in every task; default <root>/models)."""
    import builtins

    from kfp import local

    from pipelines.t2v import build_pipeline

    root.mkdir(parents=True, exist_ok=True)
    cluster = local_cluster(models or root / "models")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root.resolve() / "kfp"))
    # kfp.local indents each task's output by swapping builtins.print while the task runs; two tasks in parallel
    # threads (the caption shards) can leave the indenting one in place after the run
    plain_print = builtins.print
    try:
        return build_pipeline(cluster)(**arguments)
    finally:
        builtins.print = plain_print


def local_cluster(models: Path):
    """The cluster settings of a local run: `models` stands in for the models volume, and a failed task is retried
    at once (one machine: no node to wait for)."""
    from pipelines.t2v import ClusterSettings

    return ClusterSettings(models_path=str(Path(models).resolve()), retry_backoff_s=0)


def latest_outputs(root: Path) -> tuple[Path, Path]:
    """(evaluation folder, decision file) of the newest local run under `root`."""
    runs = sorted((root / "kfp").glob("t2v-pipeline-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise ValueError(f"no local pipeline run under {root / 'kfp'}; run `t2v pipeline run` first")
    return runs[-1] / "evaluate" / "evaluation", runs[-1] / "register" / "decision"
