"""What preparing a schedule's data costs, beside its training: ingest's CPU time for the footage (decode, scene cuts,
scores) and precompute's GPU time for each stage's clips (SD VAE latents of every frame, T5 features of the caption).

Ingest is decode-bound, so it is sized by a measured rate: seconds of footage one CPU core takes through ingest per
second (`benchmarks/ingest.py`, 720p H.264). Precompute is sized as training is: the encoders' FLOPs per clip (the SD
VAE encoder's convolutions and mid-block attention per frame, T5-XXL's encoder per caption token) over the GPU's bf16
peak at an encoding MFU.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.planning.gpus import GPU

# SD VAE encoder (sd-vae-ft-ema; block channels 128-256-512-512, 2 layers per block) with its quant_conv, forward: its
# convolutions cost this much per input pixel, and its mid-block attention over pixels/64 tokens of 512 channels
# 0.5 x pixels^2 (torch's FLOP counter on diffusers' AutoencoderKL agrees exactly: tests/model/test_data_plan.py)
VAE_FLOPS_PER_PIXEL = 4_128_642
VAE_ATTENTION_FLOPS_PER_PIXEL_SQUARED = 0.5
# T5 v1.1 XXL's encoder (24 layers, 4096 wide, gated FFN 10240): 2 x its 4.63B matmul weights per token
T5_XXL_FLOPS_PER_TOKEN = 2 * 24 * (4 * 4096 * 4096 + 3 * 4096 * 10240)

# Seconds of footage one core takes through ingest (the default clip mode) per second
MEASURED_INGEST_RATE = 12.0
MEASURED_INGEST_SOURCE = (
    "benchmarks/ingest.py, 12 H.264 videos of 1280x720 at 24 fps, 9 s each, on two x86_64 cores: 12.0 s of footage "
    "per core-second (93% of decoding alone)"
)
# The encoders' share of the bf16 peak while precompute runs them (convolutions and GEMMs at batch 8)
ENCODE_MFU = 0.30
ENCODE_MFU_SOURCE = "assumed (not yet measured on a GPU)"


def vae_flops(height: int, width: int) -> float:
    """The SD VAE encoder's forward FLOPs for one frame of height x width pixels."""
    pixels = height * width
    return VAE_FLOPS_PER_PIXEL * pixels + VAE_ATTENTION_FLOPS_PER_PIXEL_SQUARED * pixels**2


def encode_flops(frames: int, height: int, width: int, text_tokens: int) -> float:
    """Precompute's FLOPs for one clip: every frame through the VAE, the caption through T5-XXL."""
    return frames * vae_flops(height, width) + T5_XXL_FLOPS_PER_TOKEN * text_tokens


@dataclass(frozen=True)
class DataPlan:
    footage_hours: float
    ingest_rate: float  # footage seconds per core-second
    ingest_core_hours: float
    ingest_hours: float  # wall-clock on `cores`
    cores: int
    encode: dict[str, tuple[int, float]]  # stage -> (clips, GPU-hours)
    encode_mfu: float
    encode_gpu_hours: float
    encode_hours: float  # wall-clock on `num_gpus`
    num_gpus: int


def data_plan(
    stages: list[tuple[str, int, int, int, int]],
    *,
    footage_hours: float,
    text_tokens: int,
    gpu: GPU,
    num_gpus: int,
    cores: int,
    ingest_rate: float = MEASURED_INGEST_RATE,
    encode_mfu: float = ENCODE_MFU,
) -> DataPlan:
    """Ingest of `footage_hours` on `cores` CPU cores, and precompute of each stage's (name, clips, frames, height,
    width) on `num_gpus` GPUs."""
    if ingest_rate <= 0 or encode_mfu <= 0:
        raise ValueError(f"ingest_rate={ingest_rate} and encode_mfu={encode_mfu} must be positive")
    core_hours = footage_hours / ingest_rate
    encode = {
        name: (clips, clips * encode_flops(frames, h, w, text_tokens) / (gpu.bf16_tflops * 1e12 * encode_mfu) / 3600)
        for name, clips, frames, h, w in stages
    }
    gpu_hours = sum(hours for _, hours in encode.values())
    return DataPlan(footage_hours, ingest_rate, core_hours, core_hours / cores, cores, encode, encode_mfu, gpu_hours,
                    gpu_hours / num_gpus, num_gpus)  # fmt: skip
