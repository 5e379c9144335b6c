"""The registry the register tests use: three registered versions of the toy model, made once, on the session's
local services (tests/conftest.py `services`)."""

import shutil
from pathlib import Path

import pytest
import torch

from components.evaluate.config import EvalConfig
from components.evaluate.evaluate import evaluate
from components.register.register import RegisterConfig, register
from model.inference.pipeline import T2VPipeline

NAME = "t2v-stdit"


def perturbed(source: Path, dest: Path, std: float) -> Path:
    """A copy of a pipeline folder with Gaussian noise of `std` added to every transformer weight."""
    pipe = T2VPipeline.from_pretrained(source)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pipe.transformer.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    pipe.save_pretrained(dest)
    shutil.copy(source / "lineage.json", dest / "lineage.json")
    return dest


@pytest.fixture(scope="session")
def registry(mlflow_server, toy_chain, toy_data, tmp_path_factory):
    """Three versions in order: a lightly perturbed model (first: champion), a heavily perturbed one (worse),
    the trained one (better). Each evaluated with the champion as baseline, then registered."""
    root = tmp_path_factory.mktemp("registry")
    trained = toy_chain[2].out_dir / "pipeline"
    models = {
        "first": perturbed(trained, root / "first", 0.02),
        "worse": perturbed(trained, root / "worse", 0.05),
        "better": trained,
    }
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2V_CACHE", str(root / "cache"))
        for label, folder in models.items():
            cfg = EvalConfig(
                model=str(folder),
                data=str(toy_data),
                out_dir=str(root / f"eval-{label}"),
                baseline=f"models:/{NAME}@champion",
                max_prompts=1,
                steps=2,
                val_timesteps=4,
                tracking_uri=mlflow_server,
                progress=False,
            )
            evaluation = evaluate(cfg)
            decision = register(
                RegisterConfig(
                    model=str(folder), evaluation=cfg.out_dir, tracking_uri=mlflow_server, pipeline_run_id="kfp-run-1"
                )
            )
            results[label] = (evaluation, decision)
    return mlflow_server, results, root
