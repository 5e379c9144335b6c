"""Run the DAG on this machine through kfp.local's SubprocessRunner: the same pipeline, tasks as local processes
in this Python environment, artifacts under <root>/kfp (Kubernetes settings are ignored locally)."""

import json
from pathlib import Path

TOY = {
    "source": "synth",
    # shapes a quarter of the frame wide, and 10 stills per 2 videos: the colour of a shape carries enough of the
    # loss to be learned in minutes, and stills keep teaching it in stage 2 (images and videos mixed)
    "synth_shape_scale": 0.24,
    "synth_images": 240,
    "captioner": "metadata",
    "caption_shards": 2,
    "vae": "none:2",
    "max_text_tokens": 16,
    "buckets": json.dumps({"32": {"1": [1.0, 16], "8": [1.0, 8]}}),
    "frame_interval": 4,
    "stage1_config": "configs/toy/train.yaml",
    "stage2_config": "configs/toy/train.yaml",
    "stage3_config": "configs/toy/train.yaml",
    "stage1_steps": 800,
    "stage2_steps": 1200,
    "stage3_steps": 400,
    "stage2_settings": json.dumps(["frames=all"]),
    "stage3_settings": json.dumps(["subset={motion: 0.0}"]),
    "eval_prompts": "configs/toy/prompts.txt",
    "eval_max_prompts": 16,
    "eval_guidance_scale": 4.0,
}


def toy_arguments(root: Path, **overrides) -> dict:
    """Pipeline arguments for the toy world under `root`: tiny random T5 built there, a local MLflow store."""
    from components.precompute.tiny import build_tiny_t5

    root = root.resolve()
    t5 = root / "models" / "t5"
    if not (t5 / "config.json").exists():
        build_tiny_t5(t5, seed=0)
    return {**TOY, "workdir": str(root / "work"), "text_encoder": str(t5),
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}", **overrides}  # fmt: skip


def run_local(arguments: dict, root: Path):
    """Run the whole DAG with `arguments`; returns kfp.local's result for the pipeline."""
    from kfp import local

    from pipelines.t2v import build_pipeline

    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root.resolve() / "kfp"))
    return build_pipeline()(**arguments)


def latest_outputs(root: Path) -> tuple[Path, Path]:
    """(evaluation folder, decision file) of the newest local run under `root`."""
    runs = sorted((root / "kfp").glob("t2v-pipeline-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise ValueError(f"no local pipeline run under {root / 'kfp'}; run `t2v pipeline run` first")
    return runs[-1] / "evaluate" / "evaluation", runs[-1] / "register" / "decision"
