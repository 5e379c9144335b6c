"""Throughput metrics: tokens and training FLOPs of a batch, the GPU's peak, peak memory, and the window of steps
between two logged ones that the rates (samples/s, tokens/s, MFU) are measured over."""

from __future__ import annotations

import time

import torch

from components.train.config import TrainConfig
from model.networks.stdit import STDiT


def tokens_of(x0: torch.Tensor, model: STDiT) -> int:
    """Video tokens the transformer processes for a batch of latents (B, C, T, H, W)."""
    p = model.config.patch_size
    b, _, t, h, w = x0.shape
    return b * t * (h // p) * (w // p)


def train_flops(model: STDiT, x0: torch.Tensor, text_tokens: int, cfg: TrainConfig) -> float:
    """Model FLOPs of one training step on a batch of latents: forward and backward, 3x the forward. The forward
    that gradient checkpointing recomputes is not counted: MFU measures useful work (as benchmarks/gpu.py does)."""
    from model.planning.flops import Arch, forward_flops

    b, _, t, h, w = x0.shape
    f = forward_flops(Arch.from_config(model.config), batch=b, frames=t, height=h, width=w, text_tokens=text_tokens)
    return f.train_step()


def peak_tflops(device: str) -> float | None:
    """Dense bf16 peak of the GPU by name (for MFU, model.planning.gpus), None when unknown."""
    from model.planning.gpus import by_device_name

    spec = by_device_name(torch.cuda.get_device_name(device))
    return spec.bf16_tflops if spec else None


def peak_memory_gb(device: str) -> float:
    """Peak memory of this process so far: allocated on the GPU, or the resident set on the CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


class Window:
    """What all data-parallel processes trained since the last logged step (samples, tokens, FLOPs), and when that
    window started."""

    def __init__(self, cfg: TrainConfig, device: str, world: int, data_parallel: int):
        self.cfg, self.device, self.world, self.data_parallel = cfg, device, world, data_parallel
        self.tick = time.perf_counter()
        self.samples = self.tokens = self.flops = 0

    def add(self, x0: torch.Tensor, model: STDiT, text_tokens: int) -> None:
        """Count one step on this process's batch of latents `x0` (every process trains a batch of its shape)."""
        self.samples += x0.shape[0] * self.data_parallel
        self.tokens += tokens_of(x0, model) * self.data_parallel
        if self.device.startswith("cuda"):  # only MFU needs it, and MFU is only reported on GPUs
            self.flops += train_flops(model, x0, text_tokens, self.cfg) * self.data_parallel

    def rates(self) -> dict[str, float]:
        """samples_per_s, tokens_per_s, peak_memory_gb and (on a GPU of known peak) mfu over the window; starts the
        next window."""
        elapsed, self.tick = time.perf_counter() - self.tick, time.perf_counter()
        metrics = {
            "samples_per_s": self.samples / max(elapsed, 1e-9),
            "tokens_per_s": self.tokens / max(elapsed, 1e-9),
            "peak_memory_gb": peak_memory_gb(self.device),
        }
        if self.device.startswith("cuda") and (peak := peak_tflops(self.device)):
            metrics["mfu"] = self.flops / max(elapsed, 1e-9) / (peak * 1e12 * self.world)
        self.samples = self.tokens = self.flops = 0
        return metrics
