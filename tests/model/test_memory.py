"""The memory model against the measured peak of live tensor storage, the largest batch that fits, and the
committed bucket presets."""

import argparse
from pathlib import Path

import pytest
import torch
import yaml

from model.cli import _run_buckets
from model.networks.presets import preset_config
from model.networks.stdit import STDiT
from model.planning.flops import Arch
from model.planning.memory import GB, LiveTensorPeak, StepSetup, bucket_preset, max_batch, recompute_blocks, step_memory

ROOT = Path(__file__).resolve().parents[2]


def measured_step_peak(
    preset: str, batch: int, frames: int, side: int, checkpointing: bool, recompute: int | None = None
) -> tuple[float, dict]:
    """Peak bytes of a second fp32 AdamW training step (optimizer states exist), EMA copy alive, on the CPU with
    torch's default CPU attention kernel (flash attention for CPU: it keeps a log-sum-exp, not the scores)."""
    torch.manual_seed(0)
    config = preset_config(preset, in_channels=4, caption_channels=64, caption_max_length=16, sample_size=side)
    model, ema = STDiT(**config), STDiT(**config).requires_grad_(False)
    if checkpointing:
        model.enable_gradient_checkpointing()
        model.recompute_blocks = recompute
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, t, text = torch.randn(batch, 4, frames, side, side), torch.rand(batch) * 1000, torch.randn(batch, 16, 64)

    def step():
        (model(x, t, text).sample - x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    states = [*model.parameters(), *ema.parameters(), *(v for s in optimizer.state.values() for v in s.values())]
    with LiveTensorPeak(keep=states) as live:
        step()
    setup = StepSetup(plugin="ddp", gradient_checkpointing=checkpointing, recompute_blocks=recompute)
    estimate = step_memory(
        Arch.from_config(model.config), batch=batch, frames=frames, height=side, width=side, text_tokens=16,
        setup=setup,
    )  # fmt: skip
    return live.peak, estimate


@pytest.mark.parametrize(
    "preset, batch, frames, checkpointing, recompute",
    [
        ("tiny", 4, 1, False, None),
        ("tiny", 2, 8, False, None),
        ("tiny", 4, 1, True, None),
        ("tiny", 2, 8, True, None),
        ("S/2", 4, 1, False, None),
        ("S/2", 2, 8, True, None),
        ("S/2", 2, 8, True, 4),  # 4 of 12 blocks recompute, 8 keep their activations
        ("S/2", 2, 8, True, 11),
    ],
)
def test_the_estimate_is_within_20_percent_of_the_measured_peak(preset, batch, frames, checkpointing, recompute):
    peak, estimate = measured_step_peak(preset, batch, frames, 16, checkpointing, recompute)
    ratio = estimate["total"] / peak
    print(f"{preset} batch {batch} x {frames} frames x 16x16 latent, checkpointing {checkpointing}: "
          f"measured {peak / 2**20:.1f} MiB, estimated {estimate['total'] / 2**20:.1f} MiB ({ratio:.2f}x)")  # fmt: skip
    assert 0.8 < ratio < 1.2


def test_the_largest_batch_fits_and_one_more_does_not():
    arch = Arch.from_config({**preset_config("XL/2"), "in_channels": 4, "out_channels": 4, "caption_channels": 4096,
                             "caption_max_length": 300, "mlp_ratio": 4.0, "qk_norm": False,
                             "attention_mode": "spatial_temporal"})  # fmt: skip
    setup = StepSetup(plugin="zero2", dp=8)
    shape = dict(frames=16, height=30, width=53, text_tokens=300, setup=setup)
    batches = [max_batch(arch, gpu_gb=gb, **shape) for gb in (24, 40, 80, 141)]
    assert batches == sorted(batches) and batches[0] >= 1
    budget = 80 * GB * 0.9 - 2 * GB
    b = batches[2]
    assert step_memory(arch, batch=b, **shape)["total"] <= budget < step_memory(arch, batch=b + 1, **shape)["total"]
    no_ckpt = StepSetup(plugin="zero2", dp=8, gradient_checkpointing=False)
    assert max_batch(arch, gpu_gb=80, **{**shape, "setup": no_ckpt}) < b  # checkpointing buys batch
    assert max_batch(arch, gpu_gb=4, **shape) == 0  # the model states alone do not fit
    preset = bucket_preset(arch, gpu_gb=24, setup=setup, resolutions=("144p", "720p"), frames=(1, 16, 128))
    assert "128" not in preset["720p"] and preset["144p"]["16"][1] > preset["720p"]["16"][1]


def xl2(text_tokens: int = 120) -> Arch:
    return Arch.from_config({**preset_config("XL/2"), "in_channels": 4, "out_channels": 8, "caption_channels": 4096,
                             "caption_max_length": text_tokens, "mlp_ratio": 4.0, "qk_norm": False,
                             "attention_mode": "spatial_temporal"})  # fmt: skip


def test_the_recompute_policy_picks_none_where_the_step_fits_and_the_fewest_blocks_where_it_does_not():
    """STDiT-XL/2 at 512 px x 16 frames, batch 4 (64x64 latents), ZeRO-2 on one GPU."""
    a, setup = xl2(), StepSetup(plugin="zero2", dp=1)
    shape = {"batch": 4, "frames": 16, "height": 64, "width": 64}
    compiled = StepSetup(plugin="zero2", dp=1, compiled=True)
    assert recompute_blocks(a, [shape], text_tokens=120, setup=compiled, gpu_gb=141) == 0  # an H200 holds it all
    assert recompute_blocks(a, [shape], text_tokens=120, setup=setup, gpu_gb=141) > 0  # eager, it keeps more
    n = recompute_blocks(a, [shape], text_tokens=120, setup=setup, gpu_gb=80)  # an H100 does not
    assert 0 < n < a.num_layers
    budget = 80 * GB * 0.9 - 2 * GB

    def total(k):
        trial = StepSetup(plugin="zero2", dp=1, recompute_blocks=k)
        return step_memory(a, **shape, text_tokens=120, setup=trial)["total"]

    assert total(n) <= budget < total(n - 1)  # the fewest that fit
    assert total(0) > total(n) > total(a.num_layers)  # recompute buys memory, block by block
    # the largest of several buckets decides; a card too small for any count gets every block
    images = {"batch": 64, "frames": 1, "height": 32, "width": 32}
    assert recompute_blocks(a, [images, shape], text_tokens=120, setup=setup, gpu_gb=80) == n
    assert recompute_blocks(a, [shape], text_tokens=120, setup=setup, gpu_gb=16) == a.num_layers


@pytest.mark.parametrize("gb", [24, 40, 80, 141])
def test_the_committed_bucket_presets_are_what_the_memory_model_gives(gb, tmp_path):
    """configs/buckets/<gb>gb.yaml are generated; a change to the memory model must regenerate them."""
    from model.planning.memory import PRESET_FRAMES, PRESET_RESOLUTIONS

    out = tmp_path / f"{gb}gb.yaml"
    args = argparse.Namespace(gpu_memory=gb, preset="XL/2", dp=8, no_gradient_checkpointing=False,
                              online_encoders=False, text_tokens=300, vae_factor=8, out=str(out),
                              resolutions=list(PRESET_RESOLUTIONS), frames=list(PRESET_FRAMES))  # fmt: skip
    assert _run_buckets(args) == 0
    committed = ROOT / "configs" / "buckets" / f"{gb}gb.yaml"
    assert yaml.safe_load(committed.read_text()) == yaml.safe_load(out.read_text()), (
        f"regenerate with: t2v buckets --gpu-memory {gb} --out {committed.relative_to(ROOT)}"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("frames", [1, 16])
def test_the_estimate_is_within_15_percent_of_cuda_max_memory_allocated(frames):
    """S/2, fp32 AdamW + EMA on the GPU (flash/efficient attention), a 32x32 latent, second step."""
    device = torch.device("cuda")
    config = preset_config("S/2", in_channels=4, caption_channels=64, caption_max_length=16, sample_size=32)
    model, ema = STDiT(**config).to(device), STDiT(**config).to(device).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = 8 if frames == 1 else 2
    x = torch.randn(batch, 4, frames, 32, 32, device=device)
    t, text = torch.rand(batch, device=device) * 1000, torch.randn(batch, 16, 64, device=device)
    for i in range(2):
        if i == 1:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        (model(x, t, text).sample - x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated()
    estimate = step_memory(Arch.from_config(model.config), batch=batch, frames=frames, height=32, width=32,
                           text_tokens=16, setup=StepSetup(plugin="ddp", gradient_checkpointing=False))  # fmt: skip
    print(f"S/2 {batch}x{frames}x32x32 on {torch.cuda.get_device_name()}: max_memory_allocated "
          f"{peak / 2**20:.0f} MiB, estimate {estimate['total'] / 2**20:.0f} MiB")  # fmt: skip
    assert estimate["total"] == pytest.approx(peak, rel=0.15)
    del ema
