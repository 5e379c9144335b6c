"""`t2v register` against a real `mlflow server` with authentication, as the pipeline identity: versions, lineage
tags, champion/challenger decisions, the model card, the pyfunc flavour and `t2v generate` from the registry."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from components.register.register import RegisterConfig, decide, register
from model.inference.loading import load_pipeline

NAME = "t2v-stdit"


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


def test_each_version_carries_a_model_card_as_its_description(registry, toy_data, toy_chain):
    uri, results, _ = registry
    client = MlflowClient(uri)
    card = client.get_model_version(NAME, "3").description
    key = Path(toy_data).name
    stages = [line for line in card.splitlines() if line.startswith("- stage ")]
    assert [line.split(":")[0] for line in stages] == ["- stage 1", "- stage 2", "- stage 3"]
    for n, line in enumerate(stages):
        shapes = toy_chain[n].out_dir / "export" / "train_state.json"
        state = json.loads(shapes.read_text())
        assert f"data {key}, {state['clips']} clips, {state['steps']} steps" in line and state["clips"] > 0
        assert all(f"{shape} ({count})" in line for shape, count in state["shapes"].items())
    val = results["better"][0]["metrics"]["val_loss"]
    champion = results["better"][0]["baseline"]["metrics"]["val_loss"]
    assert f"- val_loss (rectified-flow): {val:.4g} (champion: {champion:.4g})" in card
    assert "Decision: champion and challenger, val_loss" in card and "beats champion" in card
    assert "Decision: challenger, val_loss" in client.get_model_version(NAME, "2").description


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
