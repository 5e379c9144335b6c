"""The three stages on the toy world, with the ColossalAI Booster (ddp, one CPU process)."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from components.common.encoding import EncodingConfig
from components.common.latents import LatentDataset, collate
from components.common.tracking import read_metrics_log
from components.train import checkpoint
from components.train.config import load_config
from components.train.train import train
from model.networks.stdit import STDiT
from pipelines.processes import free_ports
from tests.components.conftest import toy_stage_config

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def data(toy_data):
    return toy_data


def stage_config(data, out, stage, *overrides):
    return toy_stage_config(data, out, stage, *overrides)


@pytest.fixture(scope="module")
def chain(toy_chain):
    return toy_chain


def state(result):
    return json.loads((result.export_dir / "train_state.json").read_text())


def test_each_stage_starts_from_the_previous_export(chain):
    one, two, three = chain
    assert state(two)["init_sha256"] == state(one)["export_sha256"]
    assert state(three)["init_sha256"] == state(two)["export_sha256"]
    assert state(one)["init"] == "scratch" and state(three)["stage"] == 3


def test_loss_drops_within_each_stage_on_a_fixed_batch(chain):
    for result in chain:
        start, end = result.probe_loss
        assert end < start, result.out_dir


def test_stage_two_at_step_zero_is_stage_one_frame_by_frame(chain, data):
    one, _, _ = chain
    model = STDiT.from_pretrained(one.export_dir).eval()
    videos = LatentDataset(data, split=None)
    videos.index = videos.index[videos.index.num_frames > 1].reset_index(drop=True)
    batch = collate([videos[0], videos[1]])
    t = torch.tensor([300.0, 800.0])
    with torch.no_grad():
        whole = model(batch["latent"], t, batch["text"], batch["text_mask"]).sample
        for f in range(batch["latent"].shape[2]):
            frame = model(batch["latent"][:, :, f : f + 1], t, batch["text"], batch["text_mask"]).sample
            assert (whole[:, :, f : f + 1] - frame).abs().max() < 1e-5


def test_stage_one_trains_images_only_and_leaves_temporal_weights_untouched(chain):
    one, _, _ = chain
    model = STDiT.from_pretrained(one.export_dir)
    for block in model.transformer_blocks:
        assert block.attn_temp.to_out[0].weight.abs().sum() == 0


def _weights(path: Path) -> dict:
    return torch.load(path / "model.pt", map_location="cpu", weights_only=True)


def test_resume_continues_exactly(data, tmp_path):
    straight = train(stage_config(data, tmp_path / "a", 2, "max_steps=24", "ckpt_every=8"))
    train(stage_config(data, tmp_path / "b", 2, "max_steps=16", "ckpt_every=8"))
    resumed = train(stage_config(data, tmp_path / "b", 2, "max_steps=24", "ckpt_every=8"))
    assert resumed.resumed_from == 16
    a, b = (_weights(checkpoint.step_dir(r.out_dir / "checkpoints", 24)) for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert state(straight)["export_sha256"] == state(resumed)["export_sha256"]
    # the local metrics log: a resumed run appends to it, a fresh one starts it again
    assert list(read_metrics_log(straight.out_dir / "metrics.jsonl")) == [10, 20, 24]
    assert list(read_metrics_log(resumed.out_dir / "metrics.jsonl")) == [10, 16, 20, 24]
    fresh = train(stage_config(data, tmp_path / "b", 2, "max_steps=4", "resume=none", "val_every=0"))
    assert list(read_metrics_log(fresh.out_dir / "metrics.jsonl")) == [4]


def test_the_exported_ema_forgets_the_stages_starting_weights(data, tmp_path):
    """With the production decay (0.9999) a 24-step stage exports an average of its recent weights, not the weights it
    started from: the decay ramps in as (1 + n) / (10 + n). Without the ramp the export barely moved."""

    def run(name, *extra):
        result = train(stage_config(data, tmp_path / name, 1, "max_steps=24", "ckpt_every=24", "val_every=0",
                                    "optim.ema_decay=0.9999", *extra))  # fmt: skip
        ema = STDiT.from_pretrained(result.export_dir).state_dict()
        raw = _weights(checkpoint.step_dir(result.out_dir / "checkpoints", 24))
        raw = {k.removeprefix("module."): v for k, v in raw.items()}
        return {k: (ema[k].float(), raw[k].float()) for k in ema if not k.endswith("scale_shift_table_temporal")}

    def gap(pairs):  # how far the export is from the stage's last weights
        return sum(float((e - r).norm()) for e, r in pairs.values())

    ramped, fixed = run("ramped"), run("fixed", "optim.ema_warmup=false")
    assert all(torch.equal(ramped[k][1], fixed[k][1]) for k in ramped)  # the same training either way
    assert gap(ramped) < 0.5 * gap(fixed)
    config = load_config(stage=1).optim
    assert config.ema_decay_at(0) == pytest.approx(0.1) and config.ema_decay_at(90) == pytest.approx(0.91)
    assert config.ema_decay_at(10**6) == config.ema_decay == 0.9999


def test_the_learning_rate_decays_to_the_stage_end_when_asked(data, tmp_path):
    cfg = stage_config(data, tmp_path / "linear", 1, "max_steps=24", "ckpt_every=24", "val_every=0",
                       "optim.warmup_steps=4", "optim.decay=linear", "optim.min_lr_ratio=0.1")  # fmt: skip
    result = train(cfg)
    logged = {step: m["lr"] for step, m in read_metrics_log(result.out_dir / "metrics.jsonl").items()}
    lr = cfg.optim.lr
    # step n is logged with the rate of the next step, whose share of the decay is (n + 1 - warmup) / (24 - warmup)
    assert logged == pytest.approx({10: lr * (0.1 + 0.9 * 13 / 20), 20: lr * (0.1 + 0.9 * 3 / 20), 24: lr * 0.1})
    cosine = dataclasses.replace(cfg.optim, decay="cosine", min_lr_ratio=0.0)
    assert [cosine.lr_factor(s, 24) for s in (0, 3, 13, 23)] == pytest.approx([0.25, 1.0, 0.5, 0.0])
    constant = dataclasses.replace(cfg.optim, decay="constant")
    assert [constant.lr_factor(s, 24) for s in (0, 3, 23)] == pytest.approx([0.25, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"optim\.decay='step'"):
        dataclasses.replace(cfg.optim, decay="step")


def test_a_half_written_checkpoint_is_never_taken(tmp_path):
    root = tmp_path / "checkpoints"
    good = checkpoint.commit(root, checkpoint.begin(root, 8), 8, {"step": 8, "consumed_batches": 8})
    checkpoint.begin(root, 16)  # killed while writing: a .tmp folder
    (root / "step-00000024").mkdir()  # or a folder without its COMPLETE marker
    assert checkpoint.latest(root) == good
    checkpoint.prune(root, keep_last=3)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000008", "step-00000024"]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_identical_and_logs_into_the_same_mlflow_run(data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    straight = train(stage_config(data, tmp_path / "a", 1, "max_steps=80", "ckpt_every=5", "val_every=0"))
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "components.train", "--recipe", str(ROOT / "params.yaml"),
            "--data", str(data), "--out-dir", str(out), "--no-progress",
            "--set", "max_steps=80", "--set", "ckpt_every=5", "--set", "val_every=0",
            "--set", f"tracking_uri={uri}", "--set", "system_metrics_every=0"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not checkpoint.step_dir(out / "checkpoints", 15).exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = checkpoint.latest(out / "checkpoints")
    step = int(done.name.split("-")[1])
    assert step < 80, "killed before the end"
    # and as if killed while writing the next checkpoint: a partial temporary folder, and one with no marker
    partial = checkpoint.begin(out / "checkpoints", step + 5)
    (partial / "model.pt").write_bytes((done / "model.pt").read_bytes()[:100])
    unmarked = checkpoint.step_dir(out / "checkpoints", step + 10)
    unmarked.mkdir()
    (unmarked / "model.pt").write_bytes(b"")
    resumed = train(stage_config(data, out, 1, "max_steps=80", "ckpt_every=5", "val_every=0",
                                 f"tracking_uri={uri}", "system_metrics_every=0"))  # fmt: skip
    assert resumed.resumed_from >= 15
    a, b = (_weights(checkpoint.step_dir(r.out_dir / "checkpoints", 80)) for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # one MLflow run holds the stage: what the killed process logged, then the rest
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("t2v-pipeline").experiment_id])
    assert [r.info.run_id for r in runs] == [resumed.run_id] and runs[0].info.status == "FINISHED"
    steps = sorted({m.step for m in client.get_metric_history(resumed.run_id, "loss")})
    assert steps[0] <= resumed.resumed_from < steps[-1] == 80


def test_mlflow_run_holds_params_metrics_and_tags(data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = ["max_steps=30", "val_every=6", "sample_every=15", "sample_steps=4", "system_metrics_every=0.2"]
    settings.append(f"tracking_uri={uri}")
    result = train(stage_config(data, tmp_path / "run", 1, *settings))
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.data.params["optim.lr"] == "0.001" and run.data.params["stage"] == "1"
    expected = {"loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "peak_memory_gb", "val_loss", "probe_loss"}
    assert expected <= set(run.data.metrics)
    assert any(name.startswith("system/") for name in run.data.metrics)  # CPU and memory utilisation
    assert run.data.tags["stage"] == "1" and len(run.data.tags["manifest_sha256"]) == 64
    assert run.info.status == "FINISHED"
    videos = [a.path for a in MlflowClient(uri).list_artifacts(result.run_id, "samples/step-00000030")]
    assert videos == ["samples/step-00000030/sample_0.mp4", "samples/step-00000030/sample_1.mp4"]
    import av

    with av.open(str(result.out_dir / "samples" / "step-00000030" / "sample_0.mp4")) as video:
        assert video.streams.video[0].frames >= 1


def test_bad_configs_name_the_key(data, tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['lr'\]"):
        load_config(None, ["lr=1e-4"])
    with pytest.raises(ValueError, match="plugin"):
        load_config(None, ["plugin=fsdp"])


def test_the_loop_trains_with_compiled_blocks_as_it_does_eager(data, tmp_path):
    """model.compile=true on the CPU (inductor), fused projections, two of four blocks recomputing: the losses of a
    few steps are the eager run's, within float tolerance."""
    common = [
        "max_steps=4",
        "val_every=0",
        "ckpt_every=0",
        "model.gradient_checkpointing=2",
        "model.fused_projections=true",
    ]
    eager = train(stage_config(data, tmp_path / "eager", 2, *common, "model.compile=false"))
    compiled = train(stage_config(data, tmp_path / "compiled", 2, *common, "model.compile=true"))
    assert len(compiled.losses) == 4 and all(math.isfinite(v) for v in compiled.losses)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4, abs=1e-6)
    assert state(compiled)["export_sha256"] != "" and compiled.probe_loss[1] == pytest.approx(
        eager.probe_loss[1], rel=1e-3
    )


def test_gradient_checkpointing_auto_recomputes_what_the_device_memory_needs(data, monkeypatch):
    """The trainer asks the memory model with the device's memory and the buckets' per-process batches."""
    from components.train import build
    from components.train.build import set_recompute
    from tests.model.helpers import tiny_stdit

    cfg = stage_config(data, "unused", 2, "model.gradient_checkpointing=auto")
    shapes = [{"batch": 64, "frames": 8, "height": 32, "width": 32}]
    counts = {}
    for gb in (64.0, 0.05, 0.001):
        monkeypatch.setattr(build, "device_memory_gb", lambda device, gb=gb: gb)
        model = tiny_stdit()
        counts[gb] = set_recompute(model, cfg, shapes, 6, "cpu", "ddp", 1)
        assert model.gradient_checkpointing == (counts[gb] > 0)
    assert counts[64.0] == 0 and counts[0.001] == 2  # all fits; nothing fits: every block of the two
    explicit = set_recompute(tiny_stdit(), stage_config(data, "x", 2, "model.gradient_checkpointing=1"), shapes, 6,
                             "cpu", "ddp", 1)  # fmt: skip
    assert explicit == 1
    with pytest.raises(ValueError, match=r"model\.gradient_checkpointing='some'"):
        stage_config(data, "x", 2, "model.gradient_checkpointing=some")


def test_a_checkpoint_resumes_in_the_projection_layout_it_was_written_in(data, tmp_path):
    """A run with fused projections on resumes a checkpoint written with them off (or from before them) in that
    layout, and ends as the uninterrupted run does; a layout that does not match is refused naming the setting."""
    common = ["ckpt_every=2", "val_every=0", "model.fused_projections=false"]
    straight = train(stage_config(data, tmp_path / "straight", 2, "max_steps=4", *common))
    out = tmp_path / "run"
    train(stage_config(data, out, 2, "max_steps=2", *common))
    resumed = train(stage_config(data, out, 2, "max_steps=4", *common[:-1], "model.fused_projections=true"))
    assert resumed.resumed_from == 2 and resumed.losses == straight.losses[2:]
    last = checkpoint.step_dir(out / "checkpoints", 4)
    assert json.loads((last / "state.json").read_text())["fused_projections"] is False
    with pytest.raises(ValueError, match=r"model.fused_projections=false.*--set model.fused_projections=false"):
        checkpoint.check_layout(last, {"fused_projections": True})


def test_zero2_without_cuda_is_refused_naming_the_cpu_plugin(data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs CUDA; use plugin=ddp on CPU"):
        train(stage_config(data, tmp_path, 1, "plugin=zero2"))


@pytest.mark.slow
def test_training_outlives_a_dead_tracking_server(data, tmp_path):
    import threading
    import urllib.request

    (port,) = free_ports(1)
    db = tmp_path / "mlflow.db"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert time.time() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        out = tmp_path / "run"

        def kill_when_training_is_under_way():
            while not checkpoint.step_dir(out / "checkpoints", 10).exists():
                time.sleep(0.01)
            os.killpg(server.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_training_is_under_way, daemon=True)
        killer.start()
        started = time.time()
        settings = [
            "max_steps=40",
            "ckpt_every=10",
            "log_every=1",
            "val_every=10",
            f"tracking_uri=http://127.0.0.1:{port}",
            "tracking_wait_s=2",  # how long the stage's end waits for the dead server (the default 15 s: a restart)
        ]
        result = train(stage_config(data, out, 1, *settings))
        killer.join(5)
        assert server.poll() is not None, "the server was killed mid-run"
        assert result.steps == 40 and (result.export_dir / "config.json").exists()
        assert max(result.step_times) < 5.0  # no step waited on the dead server
        assert time.time() - started < 120
        store = MlflowClient(f"sqlite:///{db}")
        assert store.get_run(result.run_id).info.run_id == result.run_id  # created before the kill, and kept
        assert len(store.get_metric_history(result.run_id, "loss")) < 40  # what came after the kill is dropped
        assert set(range(1, 41)) <= set(read_metrics_log(out / "metrics.jsonl"))  # the local log holds every step
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)


def test_online_encoding_trains_exactly_as_precomputed_latents(data, tmp_path):
    settings = json.loads((data / "meta.json").read_text())["config"]
    encoding = {f.name for f in dataclasses.fields(EncodingConfig)} - {"device"}  # what a sample is
    online = json.dumps({k: v for k, v in settings.items() if k in encoding})
    cached = train(stage_config(data, tmp_path / "cached", 2, "max_steps=6", "val_every=3"))
    live = train(stage_config(data, tmp_path / "online", 2, "max_steps=6", "val_every=3", f"online={online}"))
    # latents are bit-equal; T5 embeddings of one caption alone vs in a padded batch differ by ~1e-7
    a, b = (STDiT.from_pretrained(r.export_dir).state_dict() for r in (cached, live))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert live.val_loss["val_loss"] == pytest.approx(cached.val_loss["val_loss"], rel=1e-5)


def test_a_model_held_in_bf16_as_zero2_holds_it_probes_validates_and_samples_from_fp32_data(data, tmp_path):
    """LowLevelZero casts the module to bf16 and converts inputs only in its own forward: the loop's probe,
    validation and sampling call the model itself with the fp32 latents and embeddings the data holds."""
    from components.common.validation import probe_loss, validation_loss
    from model.schedulers.flow import sample

    export = train(stage_config(data, tmp_path / "run", 2, "max_steps=1", "val_every=0")).export_dir
    model = STDiT.from_pretrained(export).to(torch.bfloat16)
    val = LatentDataset(data, split="val")
    batch = collate([val[0], val[1]])
    assert batch["latent"].dtype == torch.float32
    assert math.isfinite(probe_loss(model, batch, "cpu"))
    assert math.isfinite(validation_loss(model, val, "cpu", timesteps=2, max_samples=2)["val_loss"])
    latents = sample(model, tuple(batch["latent"].shape), batch["text"], batch["text_mask"], num_steps=2)
    assert latents.dtype == torch.bfloat16 and torch.isfinite(latents.float()).all()


def test_the_whole_loop_runs_its_zero2_path_with_the_model_held_in_bf16(data, tmp_path, monkeypatch):
    """Probe, validation, sample videos, the EMA of the fp32 master weights, checkpoints and a resume, under
    ColossalAI's own LowLevelZero (bf16 working weights, fp32 masters) made to run on the CPU (zero_cpu)."""
    from safetensors.torch import load_file

    from tests.components.train.zero_cpu import zero2_everywhere

    zero2_everywhere(monkeypatch)
    common = ["plugin=zero2", "ckpt_every=2", "val_every=2", "val_max_samples=2", "sample_every=4", "sample_count=1",
              "sample_steps=2"]  # fmt: skip
    out = tmp_path / "zero2"
    train(stage_config(data, out, 2, "max_steps=4", *common))
    resumed = train(stage_config(data, out, 2, "max_steps=6", *common))
    assert resumed.resumed_from == 4 and len(resumed.losses) == 2 and math.isfinite(resumed.val_loss["val_loss"])
    last = checkpoint.step_dir(out / "checkpoints", 6)
    held = _weights(last)
    assert {v.dtype for v in held.values()} == {torch.bfloat16}  # the working weights, as the plugin holds them
    ema = load_file(last / "ema.safetensors")
    exported = STDiT.from_pretrained(resumed.export_dir).state_dict()
    assert all(ema[k].dtype == torch.float32 and torch.equal(ema[k], exported[k]) for k in ema)
    assert any(not torch.equal(ema[k], held[k].float()) for k in ema)  # the EMA is not the working weights
    assert list((out / "samples" / "step-00000004").glob("*.mp4"))
    masters = load_file(last / "masters.safetensors")  # the fp32 masters, whole, beside the bf16 working weights
    assert {v.dtype for v in masters.values()} == {torch.float32} and masters.keys() == held.keys()
    assert all(torch.equal(masters[k].to(torch.bfloat16), held[k]) for k in held)


@pytest.mark.gpu
def test_zero2_on_cuda_trains_checkpoints_and_resumes_exactly(data, tmp_path):
    """ColossalAI's LowLevelZero (stage 2, bf16) on one GPU: a run stopped at its step-4 checkpoint and resumed to
    step 6 ends as an uninterrupted 6-step run does, and its checkpoints hold the working weights in bf16."""
    common = ["plugin=zero2", "ckpt_every=2", "val_every=0", "sample_every=0"]
    whole = train(stage_config(data, tmp_path / "whole", 2, "max_steps=6", *common))
    assert all(math.isfinite(x) for x in whole.losses) and all(math.isfinite(x) for x in whole.probe_loss)
    held = _weights(checkpoint.step_dir(tmp_path / "whole" / "checkpoints", 6))
    assert {v.dtype for v in held.values()} == {torch.bfloat16}  # LowLevelZero's working weights
    train(stage_config(data, tmp_path / "split", 2, "max_steps=4", *common))
    resumed = train(stage_config(data, tmp_path / "split", 2, "max_steps=6", *common))
    assert resumed.resumed_from == 4 and resumed.losses == pytest.approx(whole.losses[4:], rel=1e-3)
    a = STDiT.from_pretrained(whole.export_dir).state_dict()
    b = STDiT.from_pretrained(resumed.export_dir).state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)  # GPU kernels need not be bit-exact


class PidRecordingVAE:
    """The real VAE, noting which process each encode call runs in."""

    def __init__(self, vae, log: Path):
        self.vae, self.log = vae, log

    def __getattr__(self, name):
        return getattr(self.vae, name)

    def encode(self, video):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return self.vae.encode(video)


def test_online_encoding_with_workers_encodes_in_the_training_process(data, tmp_path, monkeypatch):
    """DataLoader workers read frames; the encoders (a CUDA model on a GPU) run only in the training process."""
    import model.weights.encoders

    settings = json.loads((data / "meta.json").read_text())["config"]
    encoding = {f.name for f in dataclasses.fields(EncodingConfig)} - {"device"}
    online = json.dumps({k: v for k, v in settings.items() if k in encoding})
    log, real = tmp_path / "encode-pids.txt", model.weights.encoders.load_vae
    monkeypatch.setattr(model.weights.encoders, "load_vae", lambda *a, **k: PidRecordingVAE(real(*a, **k), log))
    common = ["max_steps=3", "val_every=0", f"online={online}"]
    workers = train(stage_config(data, tmp_path / "workers", 2, *common, "num_workers=2"))
    assert {int(p) for p in log.read_text().split()} == {os.getpid()}
    alone = train(stage_config(data, tmp_path / "alone", 2, *common, "num_workers=0"))
    assert workers.losses == alone.losses


def pixart_flow_loss(pixart, batch: dict, seed: int) -> float:
    """The probe's loss written out for PixArt itself, frame by frame: at t = 0.25, 0.5, 0.75 the velocity
    noise - x0 predicted from (1 - t) x0 + t noise, with the probe's seeded noise."""
    x0 = batch["latent"]  # (B, C, T, H, W)
    B, C, T, H, W = x0.shape
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    frames = lambda v: v.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)  # noqa: E731
    text = batch["text"].repeat_interleave(T, dim=0)
    mask = batch["text_mask"].repeat_interleave(T, dim=0)
    losses = []
    with torch.no_grad():
        for t in (0.25, 0.5, 0.75):
            x_t = frames((1 - t) * x0 + t * noise)
            timestep = torch.full((B * T,), t * 1000)
            out = pixart(x_t, encoder_hidden_states=text, encoder_attention_mask=mask, timestep=timestep,
                         added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample  # fmt: skip
            losses.append((out[:, :C] - frames(noise - x0)).pow(2).mean())
    return float(torch.stack(losses).mean())


def test_stage_one_can_start_from_a_pixart_checkpoint(data, tmp_path, monkeypatch):
    """The stage's probe loss before its first step is PixArt's own loss on the probe batch: the imported
    weights are PixArt's, wired as PixArt wires them."""
    from diffusers import PixArtTransformer2DModel

    from components.train import train as train_module

    meta = json.loads((data / "meta.json").read_text())
    torch.manual_seed(0)
    pixart = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=meta["latent_channels"],
        out_channels=meta["latent_channels"],
        num_layers=2,
        cross_attention_dim=32,
        sample_size=8,
        caption_channels=meta["encoders"]["text_channels"],
    )
    with torch.no_grad():  # away from diffusers' zero-initialised output layers, so the prediction matters
        for p in pixart.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pixart.save_pretrained(tmp_path / "pixart")
    probes, real_probe = [], train_module._probe
    monkeypatch.setattr(train_module, "_probe", lambda cfg, model, batch, device: probes.append((cfg.seed, batch))
                        or real_probe(cfg, model, batch, device))  # fmt: skip
    overrides = f"model.overrides={{caption_max_length: {meta['encoders']['max_text_tokens']}}}"
    result = train(
        stage_config(data, tmp_path / "s1", 1, "max_steps=4", f"model.init=pixart:{tmp_path / 'pixart'}", overrides)
    )
    assert state(result)["init"].startswith("pixart:")
    seed, batch = probes[0]
    expected = pixart_flow_loss(pixart.eval(), batch, seed)
    assert result.probe_loss[0] == pytest.approx(expected, rel=1e-4)


def test_generate_writes_a_playable_mp4_from_the_trained_pipeline(chain, tmp_path, capsys):
    import av

    from t2v.cli import main

    _, _, three = chain
    out = tmp_path / "red.mp4"
    args = ["generate", "a red circle moves left on a black background", "--model", str(three.out_dir / "pipeline")]
    assert main([*args, "--out", str(out), "--frames", "8", "--height", "32", "--width", "32", "--steps", "4",
                 "--gif", "--no-progress"]) == 0  # fmt: skip
    with av.open(str(out)) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (32, 32, 3)
    assert out.with_suffix(".gif").read_bytes()[:3] == b"GIF" and "seed 0" in capsys.readouterr().out
    assert main(["generate", "x", "--model", str(tmp_path)]) == 2  # not a pipeline folder: a clear error


def test_a_bucket_preset_sets_the_batch_sizes(data, tmp_path, caplog):
    import logging

    preset = '{"32": {"1": [1.0, 2], "8": [1.0, 1]}}'
    settings = ["max_steps=2", "val_every=0", "ckpt_every=0", "sample_every=0", f"buckets={preset}", "frames=all"]
    with caplog.at_level(logging.INFO, logger="components.train.train"):
        result = train(stage_config(data, tmp_path / "out", 1, *settings))
    assert result.steps == 2
    assert "{'32-1f-32x32': 2, '32-8f-32x32': 1} (global, 1 data-parallel processes)" in caplog.text
    with pytest.raises(ValueError, match="no batch size in the bucket preset"):
        train(stage_config(data, tmp_path / "bad", 1, "max_steps=1", 'buckets={"32": {"1": [1.0, 2]}}', "frames=all"))


def test_the_timestep_shift_scales_latents_by_the_datas_own_vae_factor(data, tmp_path):
    """The resolution-aware shift turns latent sizes back into pixels with the factor of the VAE that made the
    latents (precompute's meta.json), never a restated setting."""
    from components.train.train import with_data_factors
    from model.schedulers.flow import timestep_shift_factor

    meta = json.loads((data / "meta.json").read_text())
    factor = meta["encoders"]["vae_spatial"]
    assert factor != 8  # the toy world's patch autoencoder, not the SD VAE's 8
    cfg = with_data_factors(stage_config(data, tmp_path, 2, "flow.shift=null"), meta)
    assert cfg.flow.spatial_compression == factor
    latent = (4, 8, 16, 16)
    assert timestep_shift_factor(cfg.flow, latent) == pytest.approx(
        math.sqrt(16 * 16 * factor**2 / cfg.flow.base_pixels) * math.sqrt(8 / cfg.flow.base_latent_frames)
    )
    with pytest.raises(ValueError, match=r"flow.spatial_compression is not a setting: it is read from the VAE"):
        stage_config(data, tmp_path, 2, "flow.spatial_compression=4")
    result = train(stage_config(data, tmp_path / "run", 2, "max_steps=1", "val_every=0", "ckpt_every=0"))
    exported = json.loads((result.out_dir / "pipeline" / "model_index.json").read_text())
    assert exported["flow"]["spatial_compression"] == factor  # the trained pipeline samples with it too
