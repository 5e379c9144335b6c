"""Memory of one STDiT training step on one GPU, by part; the largest batch per bucket that fits a GPU.

Model states, for P parameters:
- "zero2" (ColossalAI LowLevelZero, bf16, over a data-parallel group of `dp` processes): working weights 2P (bf16),
  gradients 2P (bf16, reduced bucket by bucket) + their fp32 shard 4P/dp, fp32 master weights 4P/dp, AdamW moments
  8P/dp, and the EMA copy in fp32 on every process, 4P.
- "ddp" (fp32, the CPU path): weights 4P, gradients 4P, AdamW moments 8P, EMA 4P.

Activations are what autograd keeps for the backward pass. Counted per video token and block, in units of the
width C (efficient attention kernels keep q, k, v, the output and a log-sum-exp, never the score matrix):
- spatial attention 9C: block input, norm output, modulated input, q, k, v, attention output, projection input
  and output (gated);
- temporal attention 9C, videos only (STDiT skips the branch on images);
- cross-attention 4C: query input, q, attention output, projection input; plus keys and values of the text;
- MLP 3C + 2 x hidden + C: norm input and output, modulated input, fc1 output (GELU input), GELU output
  (fc2 input), fc2 output (gated).
With gradient checkpointing a block keeps only its input (C per token) and one block's activations exist at a
time, during its recompute. With `recompute_blocks` = N < L only the first N blocks recompute: the other L - N keep
their activations through the forward pass, and the backward pass frees them before it recomputes the first N, so the
peak is N inputs + max(L - N, 1) blocks' activations. `recompute_blocks` picks the smallest N whose step fits a GPU:
no recompute at all where the model fits (a third less compute), every block only where it must. The patch embedding
and the final layer keep a few C per token more.

Encoders kept on the GPU for online encoding (`encoder_params`) add their weights. A GPU is taken to fit a step
when the estimate stays under `usable_fraction` of its memory minus `reserve_gb` (CUDA context, allocator
fragmentation, NCCL buffers).

`LiveTensorPeak` measures the same quantity on any device: the peak of live tensor storage while code runs (a
TorchDispatchMode that watches every storage an operation creates until it is freed), to check these estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.planning.flops import Arch, param_counts

GB = 2**30
# Weights kept on the GPU when encoding online (parameters, about): T5-v1.1-XXL's encoder and the SD VAE
ONLINE_ENCODER_PARAMS = {"t5-v1_1-xxl-encoder": 4_760_000_000, "sd-vae": 83_650_000}
SPATIAL, TEMPORAL, CROSS = 9, 9, 4  # activations per token and block, in units of C (see above)
# A block compiled by torch.compile (inductor) keeps fewer of them: its partitioner recomputes cheap elementwise ops
# (modulate, gate, GELU) in the backward pass instead of saving their outputs. One measurement sets the share: a
# compiled forward and backward of STDiT-XL/2 at 512 px x 16 frames, batch 4, without recompute, peaked at 109 GiB
# on an H200 (bf16 weights and gradients besides), about 27 C per token and block where the eager count is 34 C.
# benchmarks/gpu.py checks the estimate against the measured peak on every GPU run.
COMPILED_SHARE = 27 / 34
EDGE = 4  # patch embedding and final layer, per token, in units of C


@dataclass(frozen=True)
class StepSetup:
    """How the step runs: precision and sharding of the model states, checkpointing, encoders on the GPU."""

    plugin: str = "zero2"  # "zero2" (bf16, sharded states) or "ddp" (fp32)
    dp: int = 1  # data-parallel processes the zero2 states are sharded over
    gradient_checkpointing: bool = True
    recompute_blocks: int | None = None  # with checkpointing: the first N blocks recompute; None: every block
    compiled: bool = False  # blocks compiled by torch.compile keep fewer activations (COMPILED_SHARE)
    ema: bool = True
    encoder_params: int = 0  # parameters of a VAE / text encoder kept on the GPU (bf16 for zero2)

    @property
    def act_bytes(self) -> int:
        return 2 if self.plugin == "zero2" else 4


def model_state_bytes(params: int, setup: StepSetup) -> dict[str, float]:
    P = params
    if setup.plugin == "zero2":
        states = {"weights": 2 * P, "gradients": 2 * P + 4 * P / setup.dp, "optimizer": (4 + 8) * P / setup.dp}
    elif setup.plugin == "ddp":
        states = {"weights": 4 * P, "gradients": 4 * P, "optimizer": 8 * P}
    else:
        raise ValueError(f"plugin={setup.plugin!r} must be zero2 or ddp")
    states["ema"] = 4 * P if setup.ema else 0
    states["encoders"] = setup.encoder_params * setup.act_bytes
    return states


def activation_bytes(
    a: Arch, *, batch: int, frames: int, height: int, width: int, text_tokens: int, setup: StepSetup
) -> float:
    """Activations kept for the backward pass of one step (latent height/width, latent frames)."""
    C, hidden = a.dim, a.dim * a.mlp_ratio
    tokens = batch * frames * (height // a.patch_size) * (width // a.patch_size)
    video = frames > 1 and a.variant != "full"
    per_token = (SPATIAL + (TEMPORAL if video else 0) + CROSS + 4) * C + 2 * hidden
    if a.variant == "latte":  # a temporal block with its own MLP
        per_token += TEMPORAL * C + 4 * C + 2 * hidden
    if setup.compiled:
        per_token *= COMPILED_SHARE
    text = 2 * batch * text_tokens * C  # keys and values of the caption, per block
    block = tokens * per_token + text
    edge = tokens * EDGE * C
    # checkpointing: the recomputed blocks' inputs, the others' activations, and one recomputed block's activations
    # at a time (by then the backward pass has freed the later blocks')
    L = a.num_layers
    n = (L if setup.recompute_blocks is None else min(L, setup.recompute_blocks)) if setup.gradient_checkpointing else 0
    kept = n * tokens * C + max(L - n, 1 if n else 0) * block
    return (kept + edge) * setup.act_bytes


def step_memory(
    a: Arch, *, batch: int, frames: int, height: int, width: int, text_tokens: int, setup: StepSetup
) -> dict[str, float]:
    """Bytes by part ("weights", "gradients", "optimizer", "ema", "encoders", "activations") and the step's peak
    "total". The backward pass frees activations as it makes gradients, so the two are not held in full at once:
    the peak is the persistent states plus the larger of the two."""
    counts = param_counts(a)
    parts = model_state_bytes(counts["total"], setup)
    if frames == 1 and a.variant == "spatial_temporal":  # the temporal branch is skipped: no gradients for it
        parts["gradients"] *= 1 - counts["temporal"] / counts["total"]
    parts["activations"] = activation_bytes(
        a, batch=batch, frames=frames, height=height, width=width, text_tokens=text_tokens, setup=setup
    )
    persistent = sum(v for k, v in parts.items() if k not in ("gradients", "activations"))
    parts["total"] = persistent + max(parts["gradients"], parts["activations"])
    return parts


def usable_bytes(gpu_gb: float, usable_fraction: float, reserve_gb: float) -> float:
    """What a step may use of a GPU's memory: `usable_fraction` of it, less `reserve_gb` (CUDA context, allocator
    fragmentation, NCCL buffers)."""
    return gpu_gb * GB * usable_fraction - reserve_gb * GB


def max_batch(
    a: Arch,
    *,
    frames: int,
    height: int,
    width: int,
    text_tokens: int,
    setup: StepSetup,
    gpu_gb: float,
    usable_fraction: float = 0.9,
    reserve_gb: float = 2.0,
    limit: int = 512,
) -> int:
    """The largest batch whose step fits in `gpu_gb` (0 when not even one sample does), at most `limit`."""
    budget = usable_bytes(gpu_gb, usable_fraction, reserve_gb)
    shape = dict(frames=frames, height=height, width=width, text_tokens=text_tokens, setup=setup)
    one = step_memory(a, batch=1, **shape)
    if one["total"] > budget:
        return 0
    persistent = one["total"] - max(one["gradients"], one["activations"])
    return int(min(limit, (budget - persistent) // one["activations"]))


def recompute_blocks(
    a: Arch,
    shapes: list[dict],
    *,
    text_tokens: int,
    setup: StepSetup,
    gpu_gb: float,
    usable_fraction: float = 0.9,
    reserve_gb: float = 2.0,
) -> int:
    """The fewest blocks to recompute (0..num_layers) so that the step of every shape in `shapes` ({batch, frames,
    height, width}: a bucket's per-GPU batch and latent size) fits in `gpu_gb`; every block when even that does not
    fit (the step may then run out of memory: smaller batches are the fix)."""
    budget = usable_bytes(gpu_gb, usable_fraction, reserve_gb)
    for n in range(a.num_layers + 1):
        trial = StepSetup(**{**setup.__dict__, "gradient_checkpointing": True, "recompute_blocks": n})
        if all(step_memory(a, **shape, text_tokens=text_tokens, setup=trial)["total"] <= budget for shape in shapes):
            return n
    return a.num_layers


class LiveTensorPeak:
    """Peak bytes of live tensor storage while the `with` block runs (plus `keep`, tensors alive before it).

    Every storage an operation creates is counted until it is freed, views once; the peak is taken after each
    operation. Use it around a training step: weights (in `keep`), gradients, optimizer states and the tensors
    autograd keeps all show up. The attention kernel decides what attention keeps: state which one ran."""

    def __init__(self, keep=()):
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        tracker = self
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._sweep()
                for t in tree_leaves(out):
                    tracker.add(t)
                tracker.peak = max(tracker.peak, tracker.current)
                return out

        self._weak, self._mode = StorageWeakRef, Mode()
        for t in keep:
            self.add(t)
        self.peak = self.current

    def add(self, t) -> None:
        import torch

        if not isinstance(t, torch.Tensor) or t.is_meta:
            return
        storage = t.untyped_storage()
        ref = self._weak(storage)
        if ref.cdata not in self.live:
            self.live[ref.cdata] = (ref, storage.nbytes())
            self.current += storage.nbytes()

    def _sweep(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def __enter__(self) -> LiveTensorPeak:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


# ------------------------------------------------------------------------------------------------ bucket presets

PRESET_RESOLUTIONS = ("144p", "240p", "360p", "480p", "720p")
PRESET_FRAMES = (1, 16, 32, 64, 128)


def bucket_preset(
    a: Arch,
    *,
    gpu_gb: float,
    setup: StepSetup,
    resolutions: tuple[str, ...] = PRESET_RESOLUTIONS,
    frames: tuple[int, ...] = PRESET_FRAMES,
    vae_factor: int = 8,
    vae_frames: int = 1,
    text_tokens: int = 300,
    **fit,
) -> dict[str, dict[str, list]]:
    """A bucket_config {resolution: {frames: [1.0, batch]}} with the largest batch that fits `gpu_gb` for each
    bucket (the widest aspect ratio's latent size, which has the most tokens); buckets where not even one sample
    fits are left out."""
    from model.planning.buckets import ASPECT_RATIOS, bucket_size, latent_frames, resolution_area

    preset: dict[str, dict[str, list]] = {}
    for resolution in resolutions:
        sizes = [bucket_size(resolution_area(resolution), r) for r in ASPECT_RATIOS]
        height, width = max(sizes, key=lambda hw: (hw[0] // vae_factor) * (hw[1] // vae_factor))
        for n in frames:
            batch = max_batch(
                a, frames=latent_frames(n, vae_frames), height=height // vae_factor, width=width // vae_factor,
                text_tokens=text_tokens, setup=setup, gpu_gb=gpu_gb, **fit,
            )  # fmt: skip
            if batch > 0:
                preset.setdefault(resolution, {})[str(n)] = [1.0, batch]
    return preset
