"""GPU specifications the planner and the MFU metric use: dense (non-sparse) bf16 tensor-core peak and memory.

Figures are the vendors' datasheet numbers for dense bf16 with fp32 accumulation (the sparse figures are twice
these); SXM variants for H100/H800.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float  # dense peak, TFLOP/s
    memory_gb: float


GPUS: dict[str, GPU] = {
    "h100": GPU("NVIDIA H100 SXM 80GB", 989.4, 80),
    "h200": GPU("NVIDIA H200 SXM 141GB", 989.4, 141),
    "h800": GPU("NVIDIA H800 SXM 80GB", 989.4, 80),
    "a100": GPU("NVIDIA A100 SXM 80GB", 312.0, 80),
    "l40s": GPU("NVIDIA L40S 48GB", 362.05, 48),
    "rtx4090": GPU("NVIDIA GeForce RTX 4090 24GB", 165.2, 24),
}


def gpu(name: str) -> GPU:
    key = name.lower().replace(" ", "").replace("-", "")
    if key not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; known: {sorted(GPUS)}")
    return GPUS[key]


def by_device_name(device_name: str) -> GPU | None:
    """The spec for a CUDA device name such as "NVIDIA H100 80GB HBM3" (None when unknown)."""
    upper = device_name.upper().replace(" ", "")
    for key in ("h200", "h100", "h800", "a100", "l40s", "rtx4090"):
        if key.upper().replace("RTX", "") in upper:
            return GPUS[key]
    return None
