"""Training on several processes (torchrun, ddp over gloo, one thread each so that two fit on two cores) gives the
same numbers as one process with the same global batch; sequence parallelism likewise."""

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from components.common.tracking import read_metrics_log
from components.train.launch import TORCHRUN_ENV, launch, launched
from components.train.launcher import run_standalone
from pipelines.processes import free_ports

ROOT = Path(__file__).resolve().parents[3]
COMMON = ["plugin=ddp", "log_every=1", "val_every=0", "sample_every=0", "system_metrics_every=0", "num_workers=0"]


def run_train(processes: int, data: Path, out: Path, *settings: str) -> None:
    """`t2v train` through the launcher's one-machine path (torchrun --standalone, `processes` processes with one
    thread each), the toy config."""
    args = ["--recipe", str(ROOT / "params.yaml"), "--no-progress"]
    args += ["--data", str(data), "--out-dir", str(out)]
    for item in (*COMMON, *settings):
        args += ["--set", item]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        env.setenv("MKL_NUM_THREADS", "1")
        env.chdir(ROOT)
        run_standalone(args, processes)


def losses(out: Path) -> list[float]:
    return [m["loss"] for m in read_metrics_log(out / "metrics.jsonl").values() if "loss" in m]


def weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    """The trained (not EMA) weights of the checkpoint at `step`."""
    path = out / "checkpoints" / f"step-{step:08d}" / "model.pt"
    state = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu")
    return {k.removeprefix("module."): v for k, v in state.items()}


def compare(a: Path, b: Path, step: int) -> tuple[float, float]:
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb) == step
    wa, wb = weights(a, step), weights(b, step)
    assert wa.keys() == wb.keys()
    loss_diff = max(abs(x - y) for x, y in zip(la, lb, strict=True))
    weight_diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    return loss_diff, weight_diff


@pytest.fixture(scope="module")
def data(toy_data):
    return toy_data


def test_two_processes_equal_one_with_the_same_global_batch(data, tmp_path):
    """ddp on 2 processes (each half of every global batch) vs 1 process: images and videos, 6 steps."""
    settings = ["frames=all", "max_steps=6", "ckpt_every=6"]
    run_train(1, data, tmp_path / "one", *settings)
    run_train(2, data, tmp_path / "two", *settings)
    loss_diff, weight_diff = compare(tmp_path / "one", tmp_path / "two", 6)
    print(f"1 vs 2 processes, 6 steps: max loss difference {loss_diff:.2e}, max weight difference {weight_diff:.2e}")
    assert loss_diff < 1e-5 and weight_diff < 1e-5
    trained = weights(tmp_path / "one", 6)
    assert any(float(v.abs().max()) > 0 for k, v in trained.items() if "proj_out" in k)  # the weights moved


def test_sequence_parallel_sp2_equals_sp1(data, tmp_path):
    """Videos (8 latent frames, 16 positions) split over sp = 2 processes vs one process: 2 training steps, with
    validation and sample videos on the way (rank 0 alone, outside the group)."""
    settings = ["frames=videos", "max_steps=2", "ckpt_every=2", "val_every=1", "val_max_samples=2",
                "sample_every=2", "sample_count=1", "sample_steps=2"]  # fmt: skip
    run_train(1, data, tmp_path / "sp1", *settings)
    run_train(2, data, tmp_path / "sp2", *settings, "sp=2")
    loss_diff, weight_diff = compare(tmp_path / "sp1", tmp_path / "sp2", 2)
    print(f"sp=1 vs sp=2 over 2 steps: max loss difference {loss_diff:.2e}, max weight difference {weight_diff:.2e}")
    assert loss_diff < 1e-5 and weight_diff < 1e-5
    val = [{k: v for k, v in read_metrics_log(tmp_path / d / "metrics.jsonl")[2].items() if k.startswith("val_loss")}
           for d in ("sp1", "sp2")]  # fmt: skip
    assert val[0] and val[0].keys() == val[1].keys()
    assert all(abs(val[0][k] - val[1][k]) < 1e-5 for k in val[0])
    assert list((tmp_path / "sp2" / "samples" / "step-00000002").glob("*.mp4"))


def test_a_lone_process_gets_a_group_of_its_own_for_the_run_only(monkeypatch):
    """Without torchrun's variables, `launched` gives the process a group on a free loopback port for the block and
    takes the variables away afterwards: a process this one starts later (the tests' killed runs, a benchmark's
    runs) must not inherit a port that another socket may hold by then. torchrun's own variables stay as they are."""
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    with launched(seed=0) as (rank, world, device):
        assert (rank, world, device) == (0, 1, "cpu") and dist.is_initialized()
        assert os.environ["WORLD_SIZE"] == "1" and int(os.environ["MASTER_PORT"]) > 0
    assert not dist.is_initialized()
    assert not [key for key in TORCHRUN_ENV if key in os.environ]
    with pytest.raises(RuntimeError, match="torchrun"):
        launch(seed=0)  # the group's own start needs torchrun's variables, and says so

    given = dict(zip(TORCHRUN_ENV, ("0", "1", "0", "1", "127.0.0.1", str(free_ports(1)[0])), strict=True))
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    with launched(seed=0) as (rank, world, _):
        assert (rank, world) == (0, 1)
    assert {key: os.environ[key] for key in TORCHRUN_ENV} == given and not dist.is_initialized()
