"""One STDiT block: spatial self-attention within each frame, temporal self-attention across frames per patch,
cross-attention to the text and the MLP, each modulated by the timestep (adaLN-single); model.networks.stdit stacks
them."""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn

from model.networks.attention import SDPAttnProcessor, self_attention
from model.networks.parallel import SequenceParallel, frames_to_positions, positions_to_frames


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class STDiTBlock(nn.Module):
    """PixArt block with a temporal self-attention after the spatial one (or one joint attention in "full" mode).

    `temporal_branch`: "modulated" (the temporal attention has its own norm and adaLN modulation and gate, and is
    skipped on single frames) or "opensora-v1" (Open-Sora 1.0's: attention on the unnormalised residual stream,
    added under the spatial branch's gate, on single frames too)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        *,
        attention_mode: str,
        temporal_branch: str = "modulated",
        qk_norm: bool,
        mlp_ratio: float,
        activation_fn: str,
        attention_bias: bool,
        norm_eps: float,
        dropout: float,
    ):
        super().__init__()
        self.attention_mode = attention_mode
        self.temporal_branch = temporal_branch
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.attn1 = self_attention(dim, num_heads, head_dim, qk_norm, attention_bias, norm_eps)
        if attention_mode == "spatial_temporal":
            self.attn_temp = self_attention(dim, num_heads, head_dim, qk_norm, attention_bias, norm_eps)
            if temporal_branch == "modulated":  # its own norm and modulation (Open-Sora 1.0's has neither)
                self.norm_temp = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
                self.scale_shift_table_temporal = nn.Parameter(torch.randn(3, dim) / dim**0.5)
        self.attn2 = Attention(
            query_dim=dim,
            cross_attention_dim=dim,
            heads=num_heads,
            dim_head=head_dim,
            bias=attention_bias,
            processor=SDPAttnProcessor(),
        )
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.ff = FeedForward(
            dim, mult=mlp_ratio, dropout=dropout, activation_fn=activation_fn, inner_dim=int(dim * mlp_ratio)
        )
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,  # (B, T*S, C)
        text: torch.Tensor,  # (B, L, C)
        text_mask: torch.Tensor,  # (B, 1, 1, L) bool, True = attend
        t6: torch.Tensor,  # (B, 6*C)
        num_frames: int,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        temporal_pe: torch.Tensor | None,  # (T, C), or (T*S, C) in full mode
        sp: SequenceParallel | None = None,  # x holds this rank's T/sp frames; temporal attention regroups
    ) -> torch.Tensor:
        B = x.shape[0]
        T = num_frames // sp.size if sp is not None else num_frames  # frames held here
        mod = self.scale_shift_table[None] + t6.reshape(B, 6, -1)  # (B, 6, C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)  # each (B, 1, C)

        h = modulate(self.norm1(x), shift_msa, scale_msa)
        if self.attention_mode == "full":
            if temporal_pe is not None:
                h = h + temporal_pe
            h = self.attn1(h, rope=rope)  # (B, T*S, C), one attention over all frames
        else:
            h = rearrange(h, "b (t s) c -> (b t) s c", t=T)
            h = self.attn1(h)  # (B*T, S, C), within each frame
            h = rearrange(h, "(b t) s c -> b (t s) c", b=B)
        x = x + gate_msa * h

        v1 = self.temporal_branch == "opensora-v1"  # Open-Sora 1.0's branch runs on single frames too
        if self.attention_mode == "spatial_temporal" and (num_frames > 1 or v1):
            if v1:  # the residual stream itself, no norm and no modulation, under the spatial branch's gate
                h, gate_t = x, gate_msa
            else:
                mod_t = self.scale_shift_table_temporal[None] + t6.reshape(B, 6, -1)[:, :3]  # (B, 3, C)
                shift_t, scale_t, gate_t = mod_t.chunk(3, dim=1)
                h = modulate(self.norm_temp(x), shift_t, scale_t)
            h = rearrange(h, "b (t s) c -> b t s c", t=T)
            if sp is not None:
                h = frames_to_positions(h, sp)  # (B, T, S/sp, C): every frame of this rank's positions
            S = h.shape[2]
            h = rearrange(h, "b t s c -> (b s) t c")
            if temporal_pe is not None:
                h = h + temporal_pe  # the temporal signal stays inside this branch
            h = self.attn_temp(h, rope=rope)  # (B*S, T, C), across frames at one position
            h = rearrange(h, "(b s) t c -> b t s c", b=B, s=S)
            if sp is not None:
                h = positions_to_frames(h, sp)
            x = x + gate_t * rearrange(h, "b t s c -> b (t s) c")

        x = x + self.attn2(x, encoder_hidden_states=text, attention_mask=text_mask)
        x = x + gate_mlp * self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x
