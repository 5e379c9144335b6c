"""Attention building blocks of STDiT: the rotary position embedding and a diffusers attention processor on torch
SDPA that applies QK-norm and then the rotary embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from einops import rearrange


def rope_cos_sin(positions: torch.Tensor, dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary-embedding tables for integer `positions` (N,): cos and sin of shape (N, dim), in float32."""
    if dim % 2:
        raise ValueError(f"rotary embedding needs an even head dimension, got attention_head_dim={dim}")
    inv_freq = theta ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[:, None] * inv_freq[None]  # (N, dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (N, dim)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` (B, H, N, D) by position: the rotate-half convention."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class SDPAttnProcessor:
    """Attention through torch SDPA: QK-norm (when the module has one) first, then the rotary embedding."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = rearrange(attn.to_q(hidden_states), "b n (h d) -> b h n d", h=attn.heads)
        k = rearrange(attn.to_k(context), "b n (h d) -> b h n d", h=attn.heads)
        v = rearrange(attn.to_v(context), "b n (h d) -> b h n d", h=attn.heads)
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)  # (B, H, N, D)
        out = rearrange(out, "b h n d -> b n (h d)")
        return attn.to_out[1](attn.to_out[0](out))


def self_attention(dim: int, heads: int, head_dim: int, qk_norm: bool, bias: bool, eps: float) -> Attention:
    """A diffusers self-attention module (PixArt parameter names) on `SDPAttnProcessor`, with RMS QK-norm or none."""
    return Attention(
        query_dim=dim,
        heads=heads,
        dim_head=head_dim,
        bias=bias,
        qk_norm="rms_norm" if qk_norm else None,
        eps=eps,
        processor=SDPAttnProcessor(),
    )
