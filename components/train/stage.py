"""The body of the training components: one stage in this pod, or on several nodes through a TrainJob.

Both keep the stage's checkpoints in <workdir>/<run_id>/stage<N> (a PVC on the cluster), so a retried task
resumes, and copy the export, the pipeline folder and the metrics log to the component's Model artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml


def stage_arguments(recipe: str, overrides: str, stage: int, data: str, out_dir: Path, init: str | None,
                    tracking_uri: str) -> list[str]:  # fmt: skip
    """The `t2v train` arguments of a pipeline's stage task (for this process, torchrun or a TrainJob's pods): the
    recipe (written beside the checkpoints, so every node reads the same one), the pipeline's overrides for this
    stage, then what the task fixes (data, output folder, start weights, tracking)."""
    from components.common.settings import read_recipe, scoped, stage_sections

    out_dir.mkdir(parents=True, exist_ok=True)
    recipe_path = out_dir / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(read_recipe(recipe), sort_keys=False))
    items = scoped(json.loads(overrides or "[]"), stage_sections(stage))
    fixed = [f"data={data}", f"out_dir={out_dir}", "progress=false", "resume=auto"]
    if init is not None:
        fixed.append(f"model.init={Path(init) / 'export'}")
    if tracking_uri:
        fixed.append(f"tracking_uri={tracking_uri}")
    return ["--recipe", str(recipe_path), "--stage", str(stage), *(a for o in [*items, *fixed] for a in ("--set", o))]


def collect(out_dir: Path, model_path: str) -> dict:
    """Copy the stage's results into the Model artifact folder; its train state for the artifact's metadata."""
    dest = Path(model_path)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("export", "pipeline"):
        shutil.copytree(out_dir / name, dest / name, dirs_exist_ok=True)
    shutil.copyfile(out_dir / "metrics.jsonl", dest / "metrics.jsonl")
    return json.loads((out_dir / "export" / "train_state.json").read_text())


def outcome(out_dir: Path) -> str:
    """How the stage went, in a few words: its steps, the last training loss logged and the validation loss."""
    state = json.loads((out_dir / "export" / "train_state.json").read_text())
    losses = [row["loss"] for row in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
              if "loss" in row]  # fmt: skip
    words = [f"{state['steps']} steps"]
    if losses:
        words.append(f"final loss {losses[-1]:.4f}")
    if state.get("val_loss") is not None:
        words.append(f"validation loss {state['val_loss']:.4f}")
    return ", ".join(words)


def on_volume(path: str, workdir: Path, name: str) -> str:
    """`path` itself when it is under `workdir` (the shared volume), else a copy there that every node can read
    (kept across retries: an existing copy is reused)."""
    if Path(path).resolve().is_relative_to(workdir.resolve()):
        return path
    target = workdir / "inputs" / name
    if not (target / ".complete").exists():
        shutil.copytree(path, target, dirs_exist_ok=True)
        (target / ".complete").write_text("")
    return str(target)


def namespace() -> str:
    """The namespace this pod runs in (the service account's), or $T2V_NAMESPACE, or "default"."""
    import os

    sa = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return os.environ.get("T2V_NAMESPACE") or (sa.read_text().strip() if sa.exists() else "default")
