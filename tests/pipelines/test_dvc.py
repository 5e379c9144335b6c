"""`dvc repro` runs the stages of dvc.yaml with the project's CLIs, from a fresh copy of the repository files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dvc_repro_runs_every_stage(tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("components", "model", "configs", "pipelines"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["synth"].update(videos=6, images=2, cut_videos=1)
    for stage, steps in ((1, 4), (2, 4), (3, 2)):
        params[f"stage{stage}"]["max_steps"] = steps
    params["evaluate"].update(max_prompts=2, steps=2, val_timesteps=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    dvc = [sys.executable, "-m", "dvc"]

    def run(*args):
        out = subprocess.run([*dvc, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        said = f"{out.stdout[-3000:]}{out.stderr[-3000:]}"
        assert out.returncode == 0, f"dvc {' '.join(args)}: exit {out.returncode}\n{said}"  # DVC's own words
        return out

    run("init", "--no-scm", "-q")
    run("repro")
    manifest = pd.read_parquet(tmp_path / "data" / "ingest" / "manifest.parquet")
    assert len(manifest) == 6 + 1 + 2  # one two-scene video
    captioned = pd.read_parquet(tmp_path / "data" / "caption" / "manifest.parquet")
    assert len(captioned) == len(manifest) and captioned.text.str.len().gt(0).all()
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert set(lock["stages"]) == {
        "synth", "ingest-shard@0", "ingest-shard@1", "ingest", "caption", "tiny-models", "precompute", "train-stage-1",
        "train-stage-2", "train-stage-3", "evaluate", "register",
    }  # fmt: skip
    decision = json.loads((tmp_path / "data" / "register" / "decision.json").read_text())
    assert decision["version"] == "1" and decision["promoted"]  # the first version becomes champion
    record = json.loads((tmp_path / "data" / "register" / "registered.json").read_text())  # DVC's output
    assert record["value"] == decision["challenger_value"] and "version" not in record and record["data_key"]
    assert (tmp_path / "data" / "evaluate" / "report.html").exists() and (tmp_path / "mlflow.db").exists()
    for stage in (1, 2, 3):
        state = json.loads((tmp_path / "data" / "train" / f"stage{stage}" / "export" / "train_state.json").read_text())
        assert state["stage"] == stage
    assert "No stages to execute" in run("status").stdout or "up to date" in run("status").stdout
    first_lock = (tmp_path / "dvc.lock").read_text()  # made with no champion in the registry
    second = run("repro")
    assert "didn't change, skipping" in second.stdout and "Running stage" not in second.stdout

    # one evaluation parameter changes (one that changes no result: the progress bar, which the stage's flag turns
    # off anyway): only evaluate runs again, now with a champion to compare with. Its tracked outputs are what they
    # were (the comparison lies beside them, untracked), so register, which takes them, has nothing to do, and a
    # fresh clone's `dvc repro` leaves dvc.lock as committed: only the recorded parameter differs
    params["evaluate"]["progress"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stale = run("status").stdout
    assert "evaluate:" in stale and "precompute:" not in stale and "train-stage-3:" not in stale
    third = run("repro").stdout
    ran = sorted(line.split("'")[1] for line in third.splitlines() if line.startswith("Running stage"))
    assert ran == ["evaluate"], third
    comparison = json.loads((tmp_path / "data" / "evaluate" / "baseline.json").read_text())
    assert comparison["baseline"]["model_info"]["version"] == "1"
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert lock["stages"]["evaluate"]["params"]["params.yaml"]["evaluate"].pop("progress") is False
    assert lock == yaml.safe_load(first_lock), "a tracked output depends on the registry"

    # DVC's own views: the evaluation's numbers as metrics, the training curves as plots
    metrics = json.loads(run("metrics", "show", "--json").stdout)
    shown = json.dumps(metrics)
    assert "data/evaluate/metrics.json" in shown and '"val_loss"' in shown and "data/ingest/summary.json" in shown
    plots = json.dumps(json.loads(run("plots", "show", "--json").stdout))
    for stage in (1, 2, 3):
        assert f"data/train/stage{stage}/plots/loss.json" in plots and f"data/train/stage{stage}/plots/lr.json" in plots
    loss = json.loads((tmp_path / "data" / "train" / "stage2" / "plots" / "loss.json").read_text())
    assert [row["step"] for row in loss] == [4] and loss[0]["loss"] > 0

    # code a stage imports is a dependency of that stage: shared latent code re-runs precompute and training
    latents = tmp_path / "components" / "common" / "latents.py"
    latents.write_text(latents.read_text() + "\n# an edit\n")
    stale = run("status").stdout
    changed = {line.rstrip(":") for line in stale.splitlines() if line and not line.startswith(("\t", " "))}
    assert changed == {"precompute", "train-stage-1", "train-stage-2", "train-stage-3", "evaluate"}, stale


def test_each_stage_depends_on_exactly_the_code_it_imports():
    """A stage's code deps are the modules its command imports (ast, transitively), no fewer and no more."""
    from tests.imports import closure, graph, source_files

    edges, files = graph(), source_files()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # a foreach stage's template
        module = stage["cmd"].split("python -m ", 1)[1].split()[0]
        modules = closure([f"{module}.__main__"], edges)
        imported = {str(files[m].relative_to(ROOT)) for m in modules if files[m].stat().st_size}  # empty: no code
        listed = {d for d in stage.get("deps", []) if d.endswith(".py")}
        assert listed == imported, (name, sorted(imported - listed), sorted(listed - imported))


def test_dvc_fans_ingest_out_over_the_recipes_shards():
    """dvc.yaml's ingest shards are the recipe's: a shard per item of `foreach`, the merge reads each one's part."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    n = yaml.safe_load((ROOT / "params.yaml").read_text())["ingest"]["num_shards"]
    assert stages["ingest-shard"]["foreach"] == list(range(n))
    parts = [f"data/ingest/parts/shard-{k}-of-{n}.jsonl" for k in range(n)]
    assert [d for d in stages["ingest"]["deps"] if "/parts/" in d] == parts
    assert stages["ingest-shard"]["do"]["outs"] == [f"data/ingest/parts/shard-${{item}}-of-{n}.jsonl"]
