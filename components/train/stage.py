"""The body of the training components: one stage in this pod, or on several nodes through a TrainJob.

Both keep the stage's checkpoints in <workdir>/<run_id>/stage<N> (a PVC on the cluster), so a retried task
resumes, and copy the export, the pipeline folder and the metrics log to the component's Model artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from components.train.pace import slow_note

if TYPE_CHECKING:
    from components.train.config import TrainConfig


def stage_settings(recipe: str, overrides: str, stage: int, data: str, out_dir: Path, init: str | None,
                   tracking_uri: str) -> tuple[TrainConfig, list[str]]:  # fmt: skip
    """The settings of a pipeline's stage task (the recipe's `train` and `stage<N>` sections, the pipeline's
    overrides for them, then what the task fixes: data, output folder, start weights, tracking), and the `t2v train`
    arguments that train with exactly these (for torchrun or a TrainJob's pods): one settings file, written beside
    the checkpoints, so every node reads the same one."""
    from components.common import settings
    from components.common.kfp import pipeline_overrides
    from components.train.config import TrainConfig

    sections = settings.stage_sections(stage)
    fixed = {"stage": stage, "data": data, "out_dir": str(out_dir), "progress": False, "resume": "auto"}
    if init is not None:
        fixed["model"] = {"init": str(Path(init) / "export")}
    if tracking_uri:
        fixed["tracking_uri"] = tracking_uri
    items = pipeline_overrides(overrides, sections)
    cfg = settings.load(TrainConfig, recipe=recipe, sections=sections, overrides=items, fixed=fixed)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "settings.yaml"
    path.write_text(yaml.safe_dump(settings.to_dict(cfg, derived=False), sort_keys=False))
    return cfg, ["--config", str(path)]


def collect(out_dir: Path, model_path: str) -> dict:
    """Copy the stage's results into the Model artifact folder; its train state for the artifact's metadata."""
    dest = Path(model_path)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("export", "pipeline"):
        shutil.copytree(out_dir / name, dest / name, dirs_exist_ok=True)
    shutil.copyfile(out_dir / "metrics.jsonl", dest / "metrics.jsonl")
    return json.loads((out_dir / "export" / "train_state.json").read_text())


def outcome(out_dir: Path) -> str:
    """How the stage went, in a few words: its steps, the last training loss logged, the validation loss (or why
    there is none) and, when it ran far slower than its recipe measured, by how much."""
    state = json.loads((out_dir / "export" / "train_state.json").read_text())
    losses = [row["loss"] for row in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
              if "loss" in row]  # fmt: skip
    words = [f"{state['steps']} steps"]
    if losses:
        words.append(f"final loss {losses[-1]:.4f}")
    if state.get("val_loss") is not None:
        words.append(f"validation loss {state['val_loss']:.4f}")
    else:
        words.append("no validation loss (no held-out sample in this stage's buckets, or val_every 0)")
    if slow := slow_note(out_dir):
        words.append(slow.split(":")[0])  # "stage 2 runs 4.1x slower than its recipe measured (...)"
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
