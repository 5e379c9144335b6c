"""Export a trained stage: the EMA weights (save_pretrained) with train_state.json and lineage.json, the
inference pipeline folder, and the DVC plots of the metrics log."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from components.common.settings import to_dict
from components.common.tracking import Tracker, write_plots
from components.train.build import init_lineage
from components.train.config import TrainConfig
from model.inference.pipeline import assemble_pipeline
from model.networks.stdit import STDiT


def export(
    cfg: TrainConfig,
    ema: STDiT,
    meta: dict,
    index: pd.DataFrame,
    init_sha: str,
    resumed_from: int,
    val: dict[str, float],
    tracker: Tracker,
) -> Path:
    """Write what the stage hands on, from one process: out_dir/export (the EMA model, train_state.json,
    lineage.json), out_dir/pipeline (its default output shape from `index`, the training samples) and out_dir/plots.
    Returns the export folder."""
    out = Path(cfg.out_dir)
    folder = out / "export"
    ema.save_pretrained(folder)
    state = {
        "stage": cfg.stage,
        "steps": int(cfg.max_steps),
        "init": cfg.model.init,
        "init_sha256": init_sha,
        "export_sha256": weights_sha256(ema),
        "resumed_from": resumed_from,
        "val_loss": val.get("val_loss"),
        "clips": len(index),  # the training clips (stills included) after the stage's subset
        "shapes": {
            f"{t}x{h}x{w}": int(n) for (t, h, w), n in index.groupby(["num_frames", "height", "width"]).size().items()
        },
    }
    (folder / "train_state.json").write_text(json.dumps(state, indent=2))
    lineage = stage_lineage(cfg, meta, state, tracker.run_id)
    (folder / "lineage.json").write_text(json.dumps(lineage, indent=2))
    encoders = meta["encoders"]
    pipe = assemble_pipeline(
        ema,
        encoders["vae"],
        encoders["text_encoder"],
        encoders["max_text_tokens"],
        cfg.flow,
        sample_shape(index),
        load_encoders=False,  # saved with its encoders as references: no need to load them here
    )
    pipe.save_pretrained(out / "pipeline")
    (out / "pipeline" / "lineage.json").write_text(json.dumps(lineage, indent=2))
    tracker.log_artifact(folder / "config.json", "export")
    write_plots(out / "metrics.jsonl", out / "plots")  # DVC plots (`dvc plots show`)
    return folder


def stage_lineage(cfg: TrainConfig, meta: dict, state: dict, run_id: str | None) -> list[dict]:
    """Where the exported weights come from: the previous stages' records (from the init folder) and this one's
    (config, data key and manifest hash, weight hashes, MLflow run)."""
    chain = init_lineage(cfg.model.init, cfg.tracking_uri)
    record = {
        **state,
        "config": to_dict(cfg),
        "data_key": meta.get("key", ""),
        "manifest_sha256": meta.get("manifest_sha256", ""),
        "mlflow_run_id": run_id,
    }  # the git commit is a tag of the MLflow run and of the registered version, not part of the weights' folder
    return [*chain, record]


def sample_shape(index: pd.DataFrame) -> tuple[int, int, int]:
    """The default output of the trained pipeline: (frames, height, width) of the longest training bucket, the
    most common size among its samples."""
    longest = index[index.num_frames == index.num_frames.max()]
    height, width = longest.groupby(["height", "width"]).size().idxmax()
    frames = int(longest.num_frames.iloc[0])
    return frames, int(height), int(width)


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of the weights (names, shapes, bytes), to link each stage's start to the previous export."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
