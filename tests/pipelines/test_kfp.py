"""The KFP DAG: its compiled IR (order, cluster settings, retries, caching) and a tiny run through kfp.local."""

import hashlib
import itertools
import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from components.evaluate.adherence import chance_mean
from pipelines.t2v import compile_pipeline
from t2v.cli import main
from tests.runs import SMALL, sets

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["synth", "ingest-shard-ids", "for-loop-1", "ingest-merge", "for-loop-2", "caption-merge", "for-loop-3",
         "precompute-merge", "train-stage", "train-stage-2", "train-stage-3", "evaluate", "register"]  # fmt: skip
# each data step's fan-out: its shard list, its loop (one task per shard) and the merge
FAN_OUTS = {"ingest": ("ingest-shard-ids", "for-loop-1", "ingest-shard", "ingest-merge"),
            "caption": ("caption-shard-ids", "for-loop-2", "caption-shard", "caption-merge"),
            "precompute": ("precompute-shard-ids", "for-loop-3", "precompute-shard", "precompute-merge")}  # fmt: skip


def loop_tasks(pipeline: dict) -> dict:
    """The tasks inside the fan-outs' loops, by name."""
    tasks = pipeline["root"]["dag"]["tasks"]
    loops = [pipeline["components"][tasks[loop]["componentRef"]["name"]]["dag"]["tasks"] for _, loop, *_ in
             FAN_OUTS.values()]  # fmt: skip
    return {name: task for loop in loops for name, task in loop.items()}


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    path = compile_pipeline(str(tmp_path_factory.mktemp("ir") / "t2v.yaml"), str(ROOT / "configs/cluster/h100.yaml"))
    pipeline, platform = yaml.safe_load_all(path.read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_step_runs_after_the_one_before(ir):
    pipeline, _ = ir
    tasks = pipeline["root"]["dag"]["tasks"]
    assert set(ORDER) | {ids for ids, *_ in FAN_OUTS.values()} == set(tasks)
    for before, after in itertools.pairwise(ORDER):
        assert before in tasks[after].get("dependentTasks", []), (before, after)
    for step, (ids, loop, shard, merge) in FAN_OUTS.items():
        assert tasks[ids]["taskInfo"]["name"] == f"{step}-shards"
        assert tasks[loop]["parameterIterator"]["items"]["inputParameter"] == f"pipelinechannel--{ids}-Output"
        assert list(pipeline["components"][tasks[loop]["componentRef"]["name"]]["dag"]["tasks"]) == [shard]
        assert loop in tasks[merge]["dependentTasks"]
        collected = tasks[merge]["inputs"]["artifacts"]["parts"]["taskOutputArtifact"]
        assert collected == {"outputArtifactKey": f"pipelinechannel--{shard}-part", "producerTask": loop}
    trains = ["train-stage", "train-stage-2", "train-stage-3"]
    for n, train in enumerate(trains, 1):  # each stage's data, from the one merge of every stage's latents
        data = tasks[train]["inputs"]["artifacts"]["data"]["taskOutputArtifact"]
        assert data == {"outputArtifactKey": f"stage{n}", "producerTask": "precompute-merge"}
    names = {name: task["taskInfo"]["name"] for name, task in tasks.items()}
    assert [names[n] for n in ("train-stage", "train-stage-2", "train-stage-3")] == [
        "train-stage-1", "train-stage-2", "train-stage-3"]  # fmt: skip


def test_the_data_steps_fan_out_with_the_clusters_resources(ir):
    """Ingest's shards on CPU nodes with its CPU, memory and retries; precompute's on a GPU each, with /dev/shm,
    tolerations and the node selector; every shard with the data volume (where its cache and staged files are) and
    the models volume."""
    pipeline, k8s = ir
    executors = pipeline["deploymentSpec"]["executors"]
    ingest, encode = (
        executors[f"exec-{name}"]["container"]["resources"] for name in ("ingest-shard", "precompute-shard")
    )
    assert "accelerator" not in ingest and (ingest["resourceCpuLimit"], ingest["resourceMemoryLimit"]) == ("16", "32G")
    assert (encode["accelerator"]["resourceType"], encode["accelerator"]["resourceCount"]) == ("nvidia.com/gpu", "1")
    assert (encode["resourceCpuLimit"], encode["resourceMemoryLimit"]) == ("16", "64G")
    assert "tolerations" not in k8s["exec-ingest-shard"] and k8s["exec-precompute-shard"]["tolerations"]
    assert k8s["exec-precompute-shard"]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    for name in ("ingest-shard", "precompute-shard"):
        mounts = {m["constant"]: m["mountPath"] for m in k8s[f"exec-{name}"]["pvcMount"]}
        assert mounts == {"t2v-data": "/mnt/data", "t2v-models": "/mnt/models"}, name
        secrets = [s["secretName"] for s in k8s[f"exec-{name}"]["secretAsEnv"]]
        assert secrets == ["dvc-credentials"], name  # the footage's keys, never MLflow's
    inner = loop_tasks(pipeline)
    assert inner["ingest-shard"]["retryPolicy"]["maxRetryCount"] == 1
    assert inner["precompute-shard"]["retryPolicy"]["maxRetryCount"] == 1


def test_every_task_reads_the_pipelines_recipe_and_the_cluster_dedups_by_default(ir):
    from pipelines.recipe import resolve

    pipeline, _ = ir
    tasks = pipeline["root"]["dag"]["tasks"]
    for name, task in [*tasks.items(), *loop_tasks(pipeline).items()]:
        if name.startswith("for-loop-"):
            continue
        params = task["inputs"]["parameters"]
        for key in ("recipe", "overrides"):  # wired to the pipeline's own parameter (through the loop inside it)
            assert params[key]["componentInputParameter"] in (key, f"pipelinechannel--{key}"), (name, key)
    defaults = {k: v.get("defaultValue") for k, v in pipeline["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults["recipe"] == "configs/recipes/production.yaml" and defaults["overrides"] == "[]"
    cluster = resolve(ROOT / defaults["recipe"], json.loads(defaults["overrides"]))
    assert cluster["ingest"].filters.dedup_distance == 4  # near-duplicates removed on the cluster by default


def test_a_task_reads_every_model_setting_and_fails_at_its_start_when_a_model_is_not_staged(tmp_path, monkeypatch):
    from components.caption.caption import CaptionConfig
    from components.common.kfp import step_settings
    from components.common.toy.models import build_models_volume
    from components.evaluate.config import EvalConfig
    from components.ingest.config import IngestConfig
    from model.weights.hub import PRODUCTION_MODELS as M
    from model.weights.hub import ModelNotFound

    # every scorer, captioner option and evaluation weight a recipe names reaches the task's settings, through the
    # components' own loader, and must be on the models volume (HF_HOME, offline)
    recipe = yaml.safe_dump({
        "ingest": {"aesthetic_model": M["ingest.aesthetic_model"], "aesthetic_head": M["ingest.aesthetic_head"],
                   "ocr_model": M["ingest.ocr_model"], "filters": {"min_aesthetic": 5.0, "max_text_area": 0.1}},
        "caption": {"model": M["caption.model"], "prompt": "Describe.", "frames": 4, "max_new_tokens": 90},
        "evaluate": {"clip_model": M["evaluate.clip_model"], "fvd_model": M["evaluate.fvd_model"],
                     "fvd_videomae": M["evaluate.fvd_videomae"], "vbench_dimensions": ["motion_smoothness"]},
    })  # fmt: skip
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(ModelNotFound) as missing:
        step_settings(IngestConfig, recipe, "[]", ("ingest",))
    for key in ("ingest.aesthetic_model", "ingest.aesthetic_head", "ingest.ocr_model"):
        assert key in str(missing.value)
    assert "hf download camenduru/improved-aesthetic-predictor sac+logos+ava1-l14-linearMSE.pth" in str(missing.value)

    build_models_volume(tmp_path / "models")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "models" / "hf"))
    ingest = step_settings(IngestConfig, recipe, "[]", ("ingest",))
    assert (ingest.aesthetic_model, ingest.ocr_model) == (M["ingest.aesthetic_model"], M["ingest.ocr_model"])
    assert ingest.filters.min_aesthetic == 5.0 and ingest.filters.max_text_area == 0.1
    caption = step_settings(CaptionConfig, recipe, '["caption.batch_size=2"]', ("caption",))
    assert (caption.model, caption.prompt, caption.frames, caption.batch_size) == (
        M["caption.model"],
        "Describe.",
        4,
        2,
    )
    evaluate = step_settings(EvalConfig, recipe, "[]", ("evaluate",))
    assert (evaluate.fvd_model, evaluate.vbench_dimensions) == (M["evaluate.fvd_model"], ("motion_smoothness",))


def test_training_runs_on_gpus_with_shm_pvc_secrets_and_tolerations(ir):
    pipeline, k8s = ir
    executors = pipeline["deploymentSpec"]["executors"]
    resources = executors["exec-train-stage"]["container"]["resources"]
    accelerator = resources["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "8"
    assert resources["resourceMemoryLimit"] == "1000G" and resources["resourceCpuLimit"] == "96"
    train = k8s["exec-train-stage"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert train["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert train["emptyDirMounts"][0] == {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "64Gi",
                                          "volumeName": "dshm"}  # fmt: skip
    assert train["pvcMount"][0]["mountPath"] == "/mnt/data" and train["pvcMount"][0]["constant"] == "t2v-data"
    secrets = {s["secretName"]: {k["secretKey"]: k["envVar"] for k in s["keyToEnv"]} for s in train["secretAsEnv"]}
    assert secrets["mlflow-credentials"]["password"] == "MLFLOW_TRACKING_PASSWORD"
    assert secrets["dvc-credentials"]["access_key_id"] == "AWS_ACCESS_KEY_ID"
    assert "accelerator" not in executors["exec-ingest-merge"]["container"].get("resources", {})
    assert "tolerations" not in k8s["exec-register"]  # CPU steps go anywhere
    for name, executor in executors.items():  # our image, nothing installed at start-up
        assert executor["container"]["image"] == "ghcr.io/t2v-pipeline/t2v-pipeline:0.1.0", name
        assert "pip install" not in " ".join(executor["container"]["command"]), name


def test_every_task_mounts_the_models_volume_offline_and_the_run_records_in_the_clusters_mlflow(ir):
    pipeline, k8s = ir
    for name, executor in pipeline["deploymentSpec"]["executors"].items():
        mounts = {m["constant"]: m["mountPath"] for m in k8s[name]["pvcMount"]}
        assert mounts == {"t2v-data": "/mnt/data", "t2v-models": "/mnt/models"}, name
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env == {"HF_HOME": "/mnt/models/hf", "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": "/tmp/hf-modules"}, name
    parameters = pipeline["root"]["inputDefinitions"]["parameters"]
    assert parameters["tracking_uri"]["defaultValue"] == "http://mlflow.t2v.svc:5000"


# which tasks get which Secret (docs/cluster.md, "Who holds which keys"): the data keys (DVC's and the footage's
# buckets) where a task reads footage, MLflow's identity where it talks to MLflow; the keys of MLflow's artifact
# bucket (mlflow-store) nowhere: artifacts go through the MLflow server
# the tasks that list or decode footage: ingest's (the shard list lists the sources), caption's and precompute's shards
FOOTAGE_TASKS = {"exec-ingest-shard-ids", "exec-ingest-shard", "exec-ingest-merge", "exec-caption-shard",
                 "exec-precompute-shard", "exec-train-stage", "exec-train-stage-2", "exec-train-stage-3"}  # fmt: skip
MLFLOW_TASKS = {"exec-train-stage", "exec-train-stage-2", "exec-train-stage-3", "exec-evaluate", "exec-register"}


def task_secrets(k8s: dict) -> dict[str, set[str]]:
    """Secret name -> the executors that get it, as environment variables or as a volume."""
    out: dict[str, set[str]] = {}
    for name, executor in k8s.items():
        mounted = [s["secretName"] for s in executor.get("secretAsEnv", [])]
        mounted += [s["secretName"] for s in executor.get("secretAsVolume", [])]
        for secret in mounted:
            out.setdefault(secret, set()).add(name)
    return out


def test_each_task_gets_only_the_secrets_its_step_needs_and_none_the_artifact_stores(ir):
    pipeline, k8s = ir
    assert set(pipeline["deploymentSpec"]["executors"]) >= FOOTAGE_TASKS | MLFLOW_TASKS
    assert task_secrets(k8s) == {"dvc-credentials": FOOTAGE_TASKS, "mlflow-credentials": MLFLOW_TASKS}
    (data,) = [s for s in k8s["exec-ingest-shard"]["secretAsEnv"] if s["secretName"] == "dvc-credentials"]
    assert {k["secretKey"]: k["envVar"] for k in data["keyToEnv"]} == {
        "access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "endpoint_url": "AWS_ENDPOINT_URL_S3"}  # fmt: skip
    assert data["optional"] is True


def test_a_cluster_file_changes_one_steps_secrets_and_a_misspelt_secret_is_refused(tmp_path):
    from pipelines.t2v import ClusterSettings

    extra = tmp_path / "cluster.yaml"
    extra.write_text("step_secrets: {evaluate: [mlflow-credentials, dvc-credentials]}\n")
    cluster = ClusterSettings.load(extra)
    assert set(cluster.secrets_of("evaluate")) == {"mlflow-credentials", "dvc-credentials"}
    assert set(cluster.secrets_of("ingest")) == {"dvc-credentials"}  # merged: the other steps keep theirs
    assert cluster.secrets_of("light") == {}  # the default
    extra.write_text("secrets: {}\n")
    assert all(ClusterSettings.load(extra).secrets_of(step) == {} for step in ("ingest", "train", "register"))
    extra.write_text("step_secrets: {ingest: [dvc-credential]}\n")
    with pytest.raises(ValueError, match=r"step_secrets.ingest names \['dvc-credential'\].*add them to secrets"):
        ClusterSettings.load(extra)


def test_a_local_run_retries_a_failed_task_at_once(tmp_path):
    from kfp import compiler

    from pipelines.local import local_cluster
    from pipelines.t2v import build_pipeline

    compiler.Compiler().compile(build_pipeline(local_cluster(tmp_path / "models")), str(tmp_path / "local.yaml"))
    tasks = next(yaml.safe_load_all((tmp_path / "local.yaml").read_text()))["root"]["dag"]["tasks"]
    assert tasks["train-stage"]["retryPolicy"]["maxRetryCount"] == 3
    assert tasks["train-stage"]["retryPolicy"]["backoffDuration"] == "0s"


def test_submit_refuses_a_run_that_nothing_would_record(tmp_path, capsys):
    untracked = tmp_path / "cluster.yaml"
    untracked.write_text("tracking_uri: ''\n")
    args = ["pipeline", "submit", "--host", "http://kfp.example:80", "--cluster", str(untracked), "--dry-run"]
    assert main(args) == 2
    assert "no MLflow to record the run in" in capsys.readouterr().err
    assert main([*args, "--no-tracking"]) == 0
    assert json.loads(capsys.readouterr().out)["arguments"] == {"tracking_uri": ""}
    assert main([*args, "--set", "tracking_uri=http://mlflow.example:5000"]) == 0


def test_training_retries_and_is_never_served_from_cache(ir):
    pipeline, _ = ir
    tasks = pipeline["root"]["dag"]["tasks"]
    for name in ("train-stage", "train-stage-2", "train-stage-3"):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 3
        assert tasks[name]["retryPolicy"]["backoffDuration"] == "60s"  # on a cluster: time for a node to come back
    for name in ("train-stage", "train-stage-2", "train-stage-3", "evaluate", "register"):
        assert not tasks[name]["cachingOptions"].get("enableCache"), name
    assert tasks["synth"]["cachingOptions"]["enableCache"]  # data steps are deterministic
    assert tasks["ingest-merge"]["cachingOptions"]["enableCache"]


def test_submit_dry_run_prints_the_request(capsys):
    args = ["pipeline", "submit", "--host", "http://kfp.example:80", "--set", "source=s3://bucket/videos/",
            "--set", "caption.num_shards=8", "--dry-run"]  # fmt: skip
    assert main(args) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["arguments"] == {"source": "s3://bucket/videos/", "overrides": '["caption.num_shards=8"]'}
    assert request["host"] == "http://kfp.example:80"
    assert main([*args, "--namespace", "t2v", "--service-account", "t2v-pipeline"]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["namespace"] == "t2v" and request["service_account"] == "t2v-pipeline"
    assert main(["pipeline", "submit", "--host", "h", "--set", "nonsense", "--dry-run"]) == 2
    assert main(["pipeline", "compile", "--cluster", "missing.yaml"]) == 2
    assert "cluster settings missing.yaml not found" in capsys.readouterr().err


# every task of the toy recipe's run (two caption shards), as the DAG names it
# every task of the toy recipe's run (two shards of each data step), as the DAG names it
TASKS = ["synth", *(f"{step}-{part}" for step in FAN_OUTS for part in ("shards", "shard-0", "shard-1", "merge")),
         "train-stage-1", "train-stage-2", "train-stage-3", "evaluate", "register"]  # fmt: skip


@pytest.mark.slow
def test_the_terminal_shows_each_task_its_time_and_figure_and_the_log_holds_the_rest(stopped_run, local_run, ir):
    """What a person sees of `t2v pipeline run` in a terminal (the shared run's resumed half, tests/runs.py)."""
    import re

    import pandas as pd

    root, shown = stopped_run.root, stopped_run.shown
    _, _, evaluation, decision = local_run
    pipeline, _ = ir
    tasks = pipeline["root"]["dag"]["tasks"]
    inner = loop_tasks(pipeline)
    names = {t["taskInfo"]["name"] for t in [*tasks.values(), *inner.values()]}
    names -= {loop for _, loop, *_ in FAN_OUTS.values()} | {shard for _, _, shard, _ in FAN_OUTS.values()}
    assert sorted(TASKS) == sorted(names | {f"{step}-shard-{k}" for step in FAN_OUTS for k in (0, 1)})  # the DAG's

    lines = shown.splitlines()
    assert len(lines) <= 76, shown
    log = Path(lines[0].removeprefix("log: "))
    assert lines[0].startswith("log: ") and log.parent == root / "logs" and log.is_file()
    done = {}
    for line in lines:
        if m := re.fullmatch(r"\s*done +(\S+) +(\d+\.\d) s  (.*)", line.split("\r")[-1]):
            done[m[1]] = (float(m[2]), m[3])
    assert sorted(done) == sorted(TASKS), shown
    for task in TASKS:
        assert f"  start  {task}" in shown
    # each figure is the run's own
    captioned = pd.read_parquet(evaluation.parents[1] / "caption-merge" / "captioned" / "manifest.parquet")
    assert done["synth"][1] == "8 videos and 4 stills of 64 px"  # the small toy world (tests/runs.py)
    assert done["ingest-shards"][1] == "2 shards of 12 files"
    assert sum(int(done[f"ingest-shard-{n}"][1].split()[0]) for n in (0, 1)) == 12
    assert done["ingest-merge"][1].startswith(f"{len(captioned)} clips kept from 12 files")
    assert done["caption-merge"][1].startswith(f"{len(captioned)} captions")
    assert sum(int(done[f"caption-shard-{n}"][1].split()[0]) for n in (0, 1)) == len(captioned)
    assert done["precompute-shards"][1].startswith("2 shards of ")
    clips = len(captioned)  # every clip fits the toy recipe's buckets, and the three stages share one data
    assert done["precompute-merge"][1] == f"latents of 1 data: stage 1: {clips}, stage 2: {clips}, stage 3: {clips}"
    state = json.loads((evaluation.parents[1] / "train-stage-3" / "model" / "export" / "train_state.json").read_text())
    assert done["train-stage-3"][1].startswith("2 steps, final loss ")
    assert done["train-stage-3"][1].endswith(f"validation loss {state['val_loss']:.4f}")
    metrics = json.loads((evaluation / "metrics.json").read_text())["metrics"]
    assert done["evaluate"][1] == (f"validation loss {metrics['val_loss']:.4f}, toy-world prompt adherence "
                                   f"{metrics['adherence/mean']:.0%} (chance {chance_mean(metrics):.0%})")  # fmt: skip
    assert done["register"][1].startswith(f"t2v-stdit version {json.loads(decision.read_text())['version']}, champion")
    steps = stopped_run.stage1_steps
    assert re.search(rf"train-stage-1.*{steps}/{steps}", shown)  # the live bar of the training steps
    closing = shown.split("\nfinished in ", 1)[1]  # then the summary
    assert "\n\nvalidation loss " in closing and "\nregistered: t2v-stdit version 1" in closing  # not indented
    assert not re.search(r"error|warning", shown, re.IGNORECASE), shown
    assert not [line for line in lines if line.lstrip().startswith(("{", "[", '"'))], shown  # no JSON

    text = log.read_text()  # what kfp.local and every task printed
    for task in [*tasks, *inner]:  # kfp.local's own lines, by its names of the tasks
        if not task.startswith("for-loop-"):
            assert f"Executing task \x1b[96m'{task}'" in text, task
    assert "executor_output.json" in text
    assert "Pipeline \x1b[95m't2v-pipeline'\x1b[0m finished with status" in text
    assert '"clips"' in text  # ingest's own summary line


@pytest.mark.slow
def test_a_failing_task_is_named_with_its_last_lines_and_the_log_and_the_run_fails(tmp_path):
    """A planted failure: a captioner that is not staged. The caption-shards task fails at its start."""
    import subprocess
    import sys

    planted = ["caption.captioner=vlm", "caption.model=nolab/no-such-captioner", *SMALL]
    run = subprocess.run([sys.executable, "-m", "t2v", "pipeline", "run", "--root", str(tmp_path), *sets(planted)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    shown = run.stdout + run.stderr
    assert run.returncode == 1, shown
    assert "failed: caption-shards: ModelNotFound: " in shown
    tail = shown.split("last lines of caption-shards:\n", 1)[1].splitlines()
    assert 0 < len([line for line in tail if line.startswith("    ")]) <= 12
    assert any("hf download nolab/no-such-captioner" in line for line in tail)  # the task's error, how to fix it
    log = Path(shown.splitlines()[0].removeprefix("log: "))
    assert shown.rstrip().endswith(f"the whole output: {log}") and log.parent == tmp_path / "logs"
    text = log.read_text()
    assert "Traceback" in text and "nolab/no-such-captioner" in text and "FAILURE" in text
    assert "done   register" not in shown and len(shown.splitlines()) < 30


@pytest.mark.slow
def test_the_local_run_ends_with_a_registered_version_traced_to_its_data(local_run):
    _, arguments, evaluation, decision = local_run
    assert json.loads(decision.read_text())["version"] == "1"
    assert (evaluation / "report.html").exists() and json.loads((evaluation / "metrics.json").read_text())["metrics"]
    uri = arguments["tracking_uri"]  # the registry too: other tests may have set a process-wide registry URI
    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("t2v-stdit", "champion")
    tags = version.tags
    run_dir = evaluation.parents[1]
    captioned = run_dir / "caption-merge" / "captioned" / "manifest.parquet"
    assert tags["manifest_sha256"] == hashlib.sha256(captioned.read_bytes()).hexdigest()
    from components.common.latents import resolve

    latents = resolve(run_dir / "precompute-merge" / "stage3")  # the artifact names the keyed folder on the volume
    assert latents.name == tags["data_key"] and (latents / "meta.json").exists()  # what stage 3 trained on
    assert latents.parent == Path(arguments["workdir"]) / "precompute" and tags["data_dvc_md5"].endswith(".dir")
    assert tags["pipeline_run_id"] and {f"stage{n}_config" for n in (1, 2, 3)} <= set(tags)
    for step in ("ingest", "caption", "precompute"):  # each fan-out ran one task per shard
        assert len([p for p in run_dir.rglob("part") if p.parent.name == f"{step}-shard"]) == 2, step


# A training task in its own process, as kfp.local and a pod run it; after committing checkpoint PAUSE_AT it says so
# in a file and waits there, so the test can kill it at a known point (a kill in the middle of a step).
TRAIN_TASK = """
import json, sys, time
from pathlib import Path

from kfp import dsl

from components.train import checkpoint
from components.train.component import train_stage

data, model_dir, volume, recipe, ready = sys.argv[1:6]
commit = checkpoint.commit


def commit_then_pause(root, tmp, step, state):
    final = commit(root, tmp, step, state)
    if step == PAUSE_AT:
        Path(ready).write_text(str(step))
        time.sleep(600)
    return final


checkpoint.commit = commit_then_pause
overrides = json.dumps(["stage1.max_steps=6", "stage1.ckpt_every=2", "stage1.val_every=0"])
train_stage.python_func(data=dsl.Dataset(name="latents", uri=data), model=dsl.Model(name="model", uri=model_dir),
                        stage=1, workdir=volume, run_id="run-1", recipe=Path(recipe).read_text(), overrides=overrides)
"""


@pytest.mark.slow
def test_a_killed_training_task_is_retried_and_resumes_from_its_checkpoints_on_the_volume(local_run, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from kfp import dsl

    from components.train.component import train_stage

    _, _, evaluation, _ = local_run
    latents = str(evaluation.parents[1] / "precompute-merge" / "stage1")
    script, ready, volume = tmp_path / "task.py", tmp_path / "ready", tmp_path / "volume"
    script.write_text(TRAIN_TASK.replace("PAUSE_AT", "4"))
    first = tmp_path / "attempt-1" / "model"
    task = subprocess.Popen([sys.executable, str(script), latents, str(first), str(volume),
                             str(ROOT / "params.yaml"), str(ready)], cwd=ROOT)  # fmt: skip
    deadline = time.monotonic() + 300
    while not ready.exists() and task.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready.exists(), f"the training task ended ({task.poll()}) or hung before its step-4 checkpoint"
    os.kill(task.pid, signal.SIGKILL)  # as the kubelet kills a pod: no cleanup, no export
    assert task.wait(timeout=60) == -signal.SIGKILL
    checkpoints = volume / "run-1" / "stage1" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00000002", "step-00000004"]
    assert not (first / "export").exists()  # the killed attempt handed nothing over

    retry = dsl.Model(name="model", uri=str(tmp_path / "attempt-2" / "model"))  # KFP's retry: the same task again
    overrides = json.dumps(["stage1.max_steps=6", "stage1.ckpt_every=2", "stage1.val_every=0"])
    train_stage.python_func(data=dsl.Dataset(name="latents", uri=latents), model=retry, stage=1, workdir=str(volume),
                            run_id="run-1", recipe=(ROOT / "params.yaml").read_text(), overrides=overrides)  # fmt: skip
    assert retry.metadata["resumed_from"] == 4 and retry.metadata["steps"] == 6
    state = json.loads((Path(retry.path) / "export" / "train_state.json").read_text())
    assert state["steps"] == 6
    assert "step-00000006" in {p.name for p in checkpoints.iterdir()}


def test_multi_node_training_tasks_launch_trainjobs_with_the_task_settings(tmp_path):
    """train_nodes > 1: each stage's task is the TrainJob launcher; its GPUs, node selector and tolerations are
    passed through to the TrainJob (not applied to the launcher pod), its volumes and env to both."""
    settings = yaml.safe_load((ROOT / "configs/cluster/h100.yaml").read_text()) or {}
    (tmp_path / "nodes.yaml").write_text(yaml.safe_dump({**settings, "train_nodes": 4, "procs_per_node": 8}))
    path = compile_pipeline(str(tmp_path / "t2v.yaml"), str(tmp_path / "nodes.yaml"))
    pipeline, platform = yaml.safe_load_all(path.read_text())
    tasks = pipeline["root"]["dag"]["tasks"]
    stages = ["train-stage-nodes", "train-stage-nodes-2", "train-stage-nodes-3"]
    assert [tasks[s]["taskInfo"]["name"] for s in stages] == ["train-stage-1", "train-stage-2", "train-stage-3"]
    for name in stages:
        params = tasks[name]["inputs"]["parameters"]
        assert params["num_nodes"]["runtimeValue"]["constant"] == 4
        assert params["procs_per_node"]["runtimeValue"]["constant"] == 8
        component = pipeline["components"][tasks[name]["componentRef"]["name"]]
        assert component["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
        passthroughs = {p["field"]: p.get("applyToTask", False) for p in component["taskConfigPassthroughs"]}
        assert passthroughs == {"RESOURCES": False, "KUBERNETES_NODE_SELECTOR": False,
                                "KUBERNETES_TOLERATIONS": False, "ENV": True, "KUBERNETES_VOLUMES": True}  # fmt: skip
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-stage-nodes"]
    assert k8s["pvcMount"][0]["constant"] == "t2v-data" and k8s["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_cluster_settings_go_through_the_settings_loader(tmp_path):
    """The shipped cluster file states nothing the defaults hold (compiling with or without it builds the same
    pods); a file's per-step mapping is merged over the defaults; types and keys are checked by name."""
    from pipelines.t2v import ClusterSettings

    with_file = compile_pipeline(str(tmp_path / "a.yaml"), str(ROOT / "configs/cluster/h100.yaml")).read_text()
    assert with_file == compile_pipeline(str(tmp_path / "b.yaml")).read_text()
    other = tmp_path / "other.yaml"
    other.write_text("gpus: {train: 4}\nmemory: {train: 500G}\nnode_selector: {gpu: a100}\n")
    cluster = ClusterSettings.load(other)
    assert cluster.gpus == {**ClusterSettings().gpus, "train": 4}  # the other steps keep their GPUs
    assert cluster.memory["train"] == "500G" and cluster.memory["default"] == ClusterSettings().memory["default"]
    assert cluster.node_selector == {"gpu": "a100"}  # not a per-step mapping: replaced whole
    other.write_text("train_nodes: two\n")
    with pytest.raises(ValueError, match=r"ClusterSettings.train_nodes='two': expected int"):
        ClusterSettings.load(other)
    other.write_text("gpu: 8\n")
    with pytest.raises(ValueError, match=r"unknown keys \['gpu'\]"):
        ClusterSettings.load(other)
