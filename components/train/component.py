"""A training stage as a KFP component."""

from kfp.dsl import Dataset, Input, Model, Output

from components.common.kfp import component


@component
def train_stage(
    data: Input[Dataset],
    model: Output[Model],
    stage: int,
    config: str,
    workdir: str,
    run_id: str,
    init: Input[Model] = None,
    steps: int = 0,
    settings: str = "[]",
    tracking_uri: str = "",
):
    """Train stage `stage` from `config` (a YAML in the image, e.g. configs/train/stage1.yaml) on the precompute
    root `data`, starting from the previous stage's `init` when given. Checkpoints live in
    <workdir>/<run_id>/stage<N> (a PVC on the cluster), so a retried task resumes from the last complete one; the
    export, the pipeline folder and the metrics log are copied to the `model` artifact at the end. `settings`: a
    JSON list of key=value overrides; `steps` > 0 overrides max_steps."""
    import json
    import shutil
    from pathlib import Path

    from components.train.config import load_config
    from components.train.train import train

    out_dir = Path(workdir) / run_id / f"stage{stage}"
    overrides = [f"data={data.path}", f"out_dir={out_dir}", f"stage={stage}", "progress=false", "resume=auto"]
    overrides += json.loads(settings)
    if steps > 0:
        overrides.append(f"max_steps={steps}")
    if init is not None:
        overrides.append(f"model.init={Path(init.path) / 'export'}")
    if tracking_uri:
        overrides.append(f"tracking_uri={tracking_uri}")
    result = train(load_config(config, overrides))
    dest = Path(model.path)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("export", "pipeline"):
        shutil.copytree(out_dir / name, dest / name, dirs_exist_ok=True)
    shutil.copyfile(out_dir / "metrics.jsonl", dest / "metrics.jsonl")
    model.metadata.update({"stage": stage, "steps": result.steps, "resumed_from": result.resumed_from,
                           "val_loss": result.val_loss.get("val_loss")})  # fmt: skip
