"""Analytic parameter counts and FLOPs of STDiT, the full-attention baseline and a Latte-style model.

A matmul of (m x k) by (k x n) counts 2*m*k*n FLOPs. Attention over n queries and m keys of width C (all heads)
counts 2*n*m*C for the scores and 2*n*m*C for the weighted sum. Norms, activations, softmax and additions are not
counted (they are memory-bound, and small next to the matmuls). A training step is forward + backward = 3x forward
(4x with gradient checkpointing, which repeats the forward).

Variants:
- "spatial_temporal": STDiT (spatial attention T*S^2, temporal attention S*T^2 per layer).
- "full": the same blocks with one joint attention over T*S tokens ((T*S)^2 per layer).
- "latte": diffusers' LatteTransformer3DModel layout: per layer a spatial block (self-attention, cross-attention,
  MLP) and a temporal block (self-attention, MLP).
"""

from __future__ import annotations

from dataclasses import dataclass, field

VARIANTS = ("spatial_temporal", "full", "latte")
TIMESTEP_FREQ_DIM = 256  # sinusoidal timestep features fed to the t-embedder (PixArt)


@dataclass(frozen=True)
class Arch:
    """The numbers the counts depend on; build from a model config with `Arch.from_config`."""

    num_layers: int
    num_heads: int
    head_dim: int
    in_channels: int = 4
    out_channels: int = 4
    patch_size: int = 2
    caption_channels: int = 4096
    caption_max_length: int = 300
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    variant: str = "spatial_temporal"

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @classmethod
    def from_config(cls, config, variant: str | None = None) -> Arch:
        return cls(
            num_layers=config["num_layers"],
            num_heads=config["num_attention_heads"],
            head_dim=config["attention_head_dim"],
            in_channels=config["in_channels"],
            out_channels=config["out_channels"] or config["in_channels"],
            patch_size=config["patch_size"],
            caption_channels=config["caption_channels"],
            caption_max_length=config["caption_max_length"],
            mlp_ratio=config["mlp_ratio"],
            qk_norm=config["qk_norm"],
            variant=variant or config["attention_mode"],
        )


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def param_counts(a: Arch) -> dict[str, int]:
    """Parameters by part: "spatial" (the PixArt-compatible part), "temporal", "total"."""
    if a.variant not in VARIANTS:
        raise ValueError(f"variant={a.variant!r} must be one of {VARIANTS}")
    C, hidden = a.dim, int(a.dim * a.mlp_ratio)
    attn = 4 * _linear(C, C) + (2 * a.head_dim if a.qk_norm else 0)
    mlp = _linear(C, hidden) + _linear(hidden, C)
    cross = 4 * _linear(C, C)
    embed = (
        _linear(a.in_channels * a.patch_size**2, C)  # patch embedding
        + _linear(TIMESTEP_FREQ_DIM, C)
        + _linear(C, C)  # timestep embedder
        + _linear(C, 6 * C)  # adaLN-single t-block
        + _linear(a.caption_channels, C)
        + _linear(C, C)  # caption projection
        + a.caption_max_length * a.caption_channels  # learned null caption
    )
    final = 2 * C + _linear(C, a.patch_size**2 * a.out_channels)
    spatial_block = attn + cross + mlp + 6 * C
    if a.variant == "spatial_temporal":
        temporal_block = attn + 3 * C
    elif a.variant == "latte":
        temporal_block = attn + mlp + 6 * C
    else:
        temporal_block = 0
    spatial = embed + final + a.num_layers * spatial_block
    temporal = a.num_layers * temporal_block
    return {"spatial": spatial, "temporal": temporal, "total": spatial + temporal}


@dataclass
class Flops:
    """Forward FLOPs of one call, by part; `train_step` adds the backward pass."""

    parts: dict[str, float] = field(default_factory=dict)

    @property
    def forward(self) -> float:
        return sum(self.parts.values())

    def train_step(self, gradient_checkpointing: bool = False) -> float:
        return self.forward * (4 if gradient_checkpointing else 3)


def forward_flops(a: Arch, *, batch: int, frames: int, height: int, width: int, text_tokens: int = 120) -> Flops:
    """Forward FLOPs for latents (batch, C, frames, height, width) and `text_tokens` caption tokens."""
    if height % a.patch_size or width % a.patch_size:
        raise ValueError(f"latent {height}x{width} must be divisible by patch_size={a.patch_size}")
    B, T, L, C = batch, frames, text_tokens, a.dim
    S = (height // a.patch_size) * (width // a.patch_size)
    N = B * T * S  # video tokens
    hidden = int(C * a.mlp_ratio)
    qkvo = 2 * N * 4 * C * C

    parts: dict[str, float] = {
        "embed": 2 * N * a.in_channels * a.patch_size**2 * C
        + 2 * B * (TIMESTEP_FREQ_DIM * C + C * C + 6 * C * C)
        + 2 * B * L * (a.caption_channels * C + C * C),
        "final": 2 * N * C * a.patch_size**2 * a.out_channels,
        "cross_attention": a.num_layers * (2 * N * 2 * C * C + 2 * B * L * 2 * C * C + 4 * N * L * C),
        "mlp": a.num_layers * 2 * N * 2 * C * hidden,
    }
    if a.variant == "full":
        parts["self_attention_linear"] = a.num_layers * qkvo
        parts["self_attention_scores"] = a.num_layers * 4 * B * (T * S) ** 2 * C
    else:
        temporal = T > 1 or a.variant == "latte"  # STDiT skips its temporal branch on images; Latte does not
        temporal_scores = 4 * B * S * T**2 * C if temporal else 0
        temporal_linear = qkvo if temporal else 0
        parts["spatial_attention_linear"] = a.num_layers * qkvo
        parts["spatial_attention_scores"] = a.num_layers * 4 * B * T * S**2 * C
        parts["temporal_attention_linear"] = a.num_layers * temporal_linear
        parts["temporal_attention_scores"] = a.num_layers * temporal_scores
        if a.variant == "latte":
            parts["mlp"] += a.num_layers * 2 * N * 2 * C * hidden  # the temporal block's MLP
    return Flops(parts)
