"""ZeRO-2 on several ranks: ColossalAI's own LowLevelZero over gloo on the CPU (zero_cpu), two processes and one.
The gradient norm is the global one and a non-finite one skips the step; a checkpoint holds the fp32 masters and
the optimizer state whole, so a resume is bit for bit the uninterrupted run on the same number of ranks, and a
checkpoint of N ranks loads exactly on M."""

import inspect
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from components.common.tracking import read_metrics_log
from components.train import checkpoint

ROOT = Path(__file__).resolve().parents[3]
COMMON = ["plugin=zero2", "log_every=1", "val_every=0", "sample_every=0", "system_metrics_every=0", "num_workers=0",
          "frames=all", "ckpt_every=1", "keep_last=10", "guard.max_bad_steps=0"]  # fmt: skip
STATE_FILES = ("model.pt", "optimizer.pt", "masters.safetensors", "ema.safetensors", "scheduler.json")


def run(processes: int, data: Path, out: Path, *settings: str) -> str:
    """`python -m components.train` with plugin zero2 on `processes` CPU processes (torchrun); its output."""
    args = ["--recipe", str(ROOT / "params.yaml"), "--no-progress", "--data", str(data), "--out-dir", str(out)]
    for item in (*COMMON, *settings):
        args += ["--set", item]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, "-m", "tests.components.train.zero_cpu", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def state(out: Path, step: int) -> dict[str, object]:
    """What checkpoint `step` holds: every tensor of its state files, and its schedule."""
    folder = checkpoint.step_dir(out / "checkpoints", step)
    held: dict[str, object] = {}
    for name in STATE_FILES:
        path = folder / name
        if name.endswith(".json"):
            held[name] = json.loads(path.read_text())
        elif name.endswith(".safetensors"):
            held.update({f"{name}/{k}": v for k, v in load_file(path).items()})
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            flat = loaded.get("state", loaded)  # the optimizer: {param index: {moment: tensor}}
            for key, value in flat.items():
                if isinstance(value, dict):
                    held.update({f"{name}/{key}/{k}": v for k, v in value.items() if torch.is_tensor(v)})
                else:
                    held[f"{name}/{key}"] = value
    return held


def equal(a: dict, b: dict) -> list[str]:
    """The keys whose values differ (tensors bit for bit)."""
    assert a.keys() == b.keys()
    return [k for k in a if not (torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k])]


def copy_checkpoint(source: Path, step: int, out: Path) -> None:
    """`out` as a run interrupted right after writing checkpoint `step` of `source` leaves it."""
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoint.step_dir(source / "checkpoints", step), checkpoint.step_dir(out / "checkpoints", step))


@pytest.fixture(scope="module")
def runs(toy_data, tmp_path_factory):
    """4 steps on two ranks and 2 on one, every checkpoint kept."""
    root = tmp_path_factory.mktemp("zero2")
    run(2, toy_data, root / "two", "max_steps=4")
    run(1, toy_data, root / "one", "max_steps=2")
    return toy_data, root


@pytest.mark.slow
def test_the_gradient_norm_is_the_global_one_and_logged_every_step(runs):
    _, root = runs
    two, one = (read_metrics_log(root / d / "metrics.jsonl") for d in ("two", "one"))
    assert [s for s in two if "grad_norm" in two[s]] == [1, 2, 3, 4]
    assert all(math.isfinite(two[s]["grad_norm"]) and two[s]["grad_norm"] > 0 for s in two)
    # the same global batch on one rank: each rank's own shard would give about 1/sqrt(2) of it
    assert two[1]["grad_norm"] == pytest.approx(one[1]["grad_norm"], rel=0.02)


@pytest.mark.slow
def test_a_resume_on_the_same_ranks_is_bit_for_bit_the_uninterrupted_run(runs, tmp_path):
    data, root = runs
    copy_checkpoint(root / "two", 2, tmp_path)
    run(2, data, tmp_path, "max_steps=4")
    assert equal(state(root / "two", 4), state(tmp_path, 4)) == []
    masters = load_file(checkpoint.step_dir(tmp_path / "checkpoints", 4) / "masters.safetensors")
    working = torch.load(checkpoint.step_dir(tmp_path / "checkpoints", 4) / "model.pt", weights_only=True)
    working = {k.removeprefix("module."): v for k, v in working.items()}
    assert {v.dtype for v in masters.values()} == {torch.float32} and {v.dtype for v in working.values()} == {
        torch.bfloat16
    }
    assert any(not torch.equal(m, m.to(torch.bfloat16).float()) for m in masters.values())  # bits bf16 lacks


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)], ids=["2-to-1", "1-to-2"])
def test_a_checkpoint_of_n_ranks_resumes_exactly_on_m_and_a_non_finite_gradient_is_skipped(
    runs, tmp_path, before, after
):
    """Step 3 gets NaN gradients (a finite loss): skipped, so its checkpoint, written by `after` ranks, holds exactly
    what step 2's, written by `before` ranks, held: weights, fp32 masters, optimizer moments, EMA, schedule."""
    data, root = runs
    source = root / ("two" if before == 2 else "one")
    copy_checkpoint(source, 2, tmp_path)
    db = tmp_path / "mlflow.db"
    output = run(after, data, tmp_path, "max_steps=4", "guard.plant={3: nan_grad}", f"tracking_uri=sqlite:///{db}")
    assert equal(state(source, 2), state(tmp_path, 3)) == []
    metrics = read_metrics_log(tmp_path / "metrics.jsonl")
    assert metrics[3]["guard/skipped_steps"] == 1 and math.isfinite(metrics[4]["grad_norm"])
    saved = json.loads((checkpoint.step_dir(tmp_path / "checkpoints", 3) / "state.json").read_text())
    assert saved["world_size"] == after and saved["consumed_batches"] == 3  # the skipped step's batch is spent
    assert saved["batch_sizes"] == json.loads((checkpoint.step_dir(source / "checkpoints", 2) / "state.json")
                                              .read_text())["batch_sizes"]  # fmt: skip
    assert f"the checkpoint was written by {before}" in output
    client = MlflowClient(f"sqlite:///{db}")
    (only,) = client.search_runs(client.get_experiment_by_name("t2v-pipeline").experiment_id)
    assert only.data.tags["world_size_changed"] == f"{before} -> {after} at step 2"


def test_the_lowlevelzero_surface_we_rely_on_is_the_installed_colossalais():
    """A ColossalAI upgrade that renames or reshapes what the trainer and the CPU shim call fails here."""
    from colossalai.accelerator.base_accelerator import BaseAccelerator
    from colossalai.accelerator.cpu_accelerator import CpuAccelerator
    from colossalai.booster.plugin import LowLevelZeroPlugin
    from colossalai.zero.low_level.bookkeeping.gradient_store import GradientStore
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    from tests.components.train.zero_cpu import STREAM_METHODS

    def params(fn) -> list[str]:
        return list(inspect.signature(fn).parameters)

    opt = LowLevelZeroOptimizer
    assert params(opt._compute_grad_norm)[:3] == ["self", "dp_pg", "gradients"]
    assert params(opt.get_working_to_master_map) == ["self"] and params(opt.get_param_padding_size) == ["self", "param"]
    assert isinstance(opt.num_param_groups, property)
    assert params(opt.state_dict)[0] == "self" and params(opt.load_state_dict) == ["self", "state_dict"]
    assert params(opt.zero_grad)[:2] == ["self", "set_to_none"]
    source = inspect.getsource(opt)
    for used in ("self.pg_to_grad_store", "self.param_to_pg", ".torch_pg",
                 "get_working_grads_by_group_id", "record_stream", "def _sanity_checks"):  # fmt: skip
        assert used in source, used
    assert params(GradientStore.get_working_grads_by_group_id) == ["self", "group_id"]
    assert {"stage", "precision", "max_norm"} <= set(params(LowLevelZeroPlugin.__init__))
    for method in STREAM_METHODS:
        assert callable(getattr(BaseAccelerator, method)) and method in CpuAccelerator.__dict__, method
