"""`t2v register` against a real `mlflow server`: versions, lineage tags, champion/challenger decisions, the pyfunc
flavour and `t2v generate` from the registry."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from components.evaluate.evaluate import EvalConfig, evaluate
from components.register.register import RegisterConfig, decide, register
from model.pipeline import T2VPipeline, load_pipeline

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


@pytest.fixture(scope="module")
def registry(mlflow_server, toy_chain, toy_data, tmp_path_factory, monkeypatch_module):
    """Three versions in order: a lightly perturbed model (first: champion), a heavily perturbed one (worse),
    the trained one (better). Each evaluated with the champion as baseline, then registered."""
    root = tmp_path_factory.mktemp("registry")
    monkeypatch_module.setenv("T2V_CACHE", str(root / "cache"))
    trained = toy_chain[2].out_dir / "pipeline"
    models = {
        "first": perturbed(trained, root / "first", 0.01),
        "worse": perturbed(trained, root / "worse", 0.05),
        "better": trained,
    }
    results = {}
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


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_first_version_is_champion_and_carries_its_lineage(registry, toy_data):
    uri, results, _ = registry
    evaluation, decision = results["first"]
    assert "no alias 'champion'" in evaluation["skipped"]["baseline"]  # nothing to compare with yet
    assert decision["version"] == "1" and decision["promoted"] and decision["reason"] == "first version"
    tags = MlflowClient(uri).get_model_version(NAME, "1").tags
    meta = json.loads((Path(toy_data) / "meta.json").read_text())
    assert tags["data_key"] == meta["key"] == Path(toy_data).name
    assert tags["manifest_sha256"] == meta["manifest_sha256"]
    assert len(tags["git_commit"]) == 40 and tags["pipeline_run_id"] == "kfp-run-1"
    assert tags["evaluation_run_id"] == evaluation["mlflow_run_id"]
    assert {json.loads(tags[f"stage{n}_config"])["stage"] for n in (1, 2, 3)} == {1, 2, 3}
    assert tags["decision"] == "first version"
    logged = {a.path for a in MlflowClient(uri).list_artifacts(evaluation["mlflow_run_id"])}
    assert {"report.html", "metrics.json", "samples"} <= logged  # the evaluate run holds the report and videos


def test_a_worse_challenger_leaves_the_champion(registry):
    _, results, _ = registry
    evaluation, decision = results["worse"]
    assert evaluation["baseline"]["model_info"]["version"] == "1"
    assert decision["challenger_value"] > decision["champion_value"]  # the heavier noise did hurt
    assert decision["version"] == "2" and not decision["promoted"]
    assert decision["champion_value"] == pytest.approx(results["first"][0]["metrics"]["val_loss"], rel=1e-6)


def test_a_better_challenger_becomes_champion(registry):
    uri, results, _ = registry
    _, decision = results["better"]
    assert decision["version"] == "3" and decision["champion_version"] == "1" and decision["promoted"]
    client = MlflowClient(uri)
    assert client.get_model_version_by_alias(NAME, "champion").version == "3"
    assert client.get_model_version_by_alias(NAME, "challenger").version == "3"
    assert "beats" in client.get_model_version(NAME, "3").tags["decision"]
    run = client.get_run(decision["register_run_id"])
    assert run.data.tags["promoted"] == "True" and run.data.metrics["champion_value"] == decision["champion_value"]


def test_the_margin_rule():
    assert decide(0.9, 1.0, lower=True, margin=0.05) and not decide(0.97, 1.0, lower=True, margin=0.05)
    assert decide(0.8, 0.7, lower=False, margin=0.05) and not decide(0.7, 0.7, lower=False, margin=0.0)


def test_pyfunc_loads_from_the_registry_and_generates(registry):
    import mlflow

    uri, _, _ = registry
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    videos = model.predict(["a red circle moves left on a black background"], params={"num_inference_steps": 2})
    assert videos.dtype == np.uint8 and videos.shape[0] == 1 and videos.shape[-1] == 3 and videos.shape[1] > 1


def test_generate_from_the_registry_writes_a_playable_mp4(registry, tmp_path):
    import av

    from t2v.cli import main

    uri, _, _ = registry
    out = tmp_path / "champion.mp4"
    args = ["generate", "a blue square moves up on a white background", "--model", f"models:/{NAME}@champion"]
    assert main([*args, "--tracking-uri", uri, "--out", str(out), "--steps", "2", "--no-progress"]) == 0
    with av.open(str(out)) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert len(frames) > 1 and frames[0].shape == (32, 32, 3)  # the shape the model was trained at
    missing = ["generate", "x", "--model", f"models:/{NAME}@nobody", "--tracking-uri", uri, "--out", str(out)]
    assert main(missing) == 2


def test_the_registered_pipeline_bundles_its_small_local_text_encoder(registry):
    from components.common.registry import pipeline_folder

    uri, _, _ = registry
    folder, info = pipeline_folder(f"models:/{NAME}/1", uri)
    index = json.loads((folder / "model_index.json").read_text())
    assert info["version"] == "1" and index["text_encoder_spec"] is None and index["vae_spec"] == "none:4"
    assert index["text_encoder"] == ["transformers", "T5EncoderModel"] and index["tokenizer"][0] == "transformers"
    assert (folder / "text_encoder" / "config.json").exists() and (folder / "tokenizer").is_dir()
    assert len(load_pipeline(folder).text_encoder.encoder.block) == 2  # the tiny T5, loaded from the version


def test_registering_without_the_champions_numbers_is_refused_before_anything_changes(registry):
    uri, _, root = registry
    client = MlflowClient(uri)
    before = len(client.search_model_versions(f"name='{NAME}'"))
    stale = root / "eval-stale"
    shutil.copytree(root / "eval-worse", stale)  # compared with version 1, but the champion is now 3
    with pytest.raises(ValueError, match="champion is version 3"):
        register(RegisterConfig(model=str(root / "worse"), evaluation=str(stale), tracking_uri=uri))
    with pytest.raises(ValueError, match="metric 'nope'"):
        register(RegisterConfig(model=str(root / "worse"), evaluation=str(stale), tracking_uri=uri, metric="nope"))
    assert len(client.search_model_versions(f"name='{NAME}'")) == before
