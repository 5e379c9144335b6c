"""The MLflow pyfunc of a trained pipeline: `mlflow.pyfunc.load_model("models:/t2v-stdit@champion")`.

A registered version is an MLflow model "from code": it holds the pipeline folder (safetensors and JSON) as its
artifact, `model_code.py` (components/register, which sets this pyfunc) and the `model` package as its code, and no
pickled object. The version loads where the project is not installed: this module imports only `model` and
libraries.

`predict` takes prompts (a list of strings, a string, or a DataFrame with a `prompt` column) and optional params
(num_frames, height, width, num_inference_steps: 0 means the model's default; guidance_scale, seed) and returns
uint8 videos as one array (N, T, H, W, 3).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np

PIPELINE_ARTIFACT = "pipeline"  # the artifact key; components.common.registry reads the same folder
DEFAULT_PARAMS = {
    "num_frames": 0,
    "height": 0,
    "width": 0,
    "num_inference_steps": 0,
    "guidance_scale": 7.0,
    "seed": 0,
}


class T2VModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import torch

        from model.inference.loading import load_pipeline

        check_registered_files(Path(context.artifacts[PIPELINE_ARTIFACT]).parents[1])
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.pipeline = load_pipeline(context.artifacts[PIPELINE_ARTIFACT]).to(device)
        self.pipeline.set_progress_bar_config(disable=True)

    def predict(self, context, model_input, params=None):
        import torch

        from model.inference.pipeline import to_uint8

        p = {**DEFAULT_PARAMS, **(params or {})}
        frames = self.pipeline(
            prompts_of(model_input),
            num_frames=int(p["num_frames"]) or None,
            height=int(p["height"]) or None,
            width=int(p["width"]) or None,
            num_inference_steps=int(p["num_inference_steps"]) or None,
            guidance_scale=float(p["guidance_scale"]),
            generator=torch.Generator().manual_seed(int(p["seed"])),
        ).frames
        return to_uint8(frames)


def check_registered_files(model_root: Path) -> None:
    """Before a weight is read: the version's files against the record made when it was registered, through the
    tracking server MLflow is pointed at (MLFLOW_TRACKING_URI). T2V_TRUST_FILES=1 skips the check (a copy served
    where no tracking server can be reached), with a warning."""
    import logging
    import os

    from mlflow.tracking import MlflowClient

    from model.inference.integrity import TamperedVersion, verify_model_folder

    if os.environ.get("T2V_TRUST_FILES") == "1":
        logging.getLogger(__name__).warning("T2V_TRUST_FILES=1: %s is not checked against its registration", model_root)
        return
    try:
        verify_model_folder(model_root, MlflowClient(), "this model version")
    except TamperedVersion:
        raise
    except Exception as err:
        raise RuntimeError(
            f"{model_root}: its files cannot be checked against the record made at its registration ({err}); point "
            "MLFLOW_TRACKING_URI (and the credentials) at the registry it came from, or set T2V_TRUST_FILES=1 to load "
            "it unchecked"
        ) from err


def prompts_of(model_input) -> list[str]:
    import pandas as pd

    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
        return [str(x) for x in model_input[column]]
    if isinstance(model_input, pd.Series | np.ndarray | list | tuple):
        return [str(x) for x in model_input]
    raise TypeError(f"prompts as a list of strings or a DataFrame with a 'prompt' column, got {type(model_input)}")
