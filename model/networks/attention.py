"""Attention building blocks of STDiT: the rotary position embedding, a diffusers attention processor on torch SDPA
that applies QK-norm and then the rotary embedding, and the two layouts of the attention input projections.

Layouts: a diffusers `Attention` holds separate `to_q`, `to_k`, `to_v` (the layout checkpoints, exports and PixArt
use). `fuse_projections` turns them into one `to_qkv` GEMM for self-attention and one `to_kv` for cross-attention
(the text side), which reads the input once instead of three times; `split_projections` undoes it. The weights are
the same numbers in both: the fused matrix is the three stacked along the output dimension. `convert_layout`
renames and stacks (or slices) the keys of a state dict, so either layout loads into either model.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn


def rope_cos_sin(
    positions: torch.Tensor, dim: int, theta: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary-embedding tables for integer `positions` (N,): cos and sin of shape (N, dim), computed in float32 and
    handed out in `dtype` (the compute dtype, so that applying them needs no float32 round trip)."""
    if dim % 2:
        raise ValueError(f"rotary embedding needs an even head dimension, got attention_head_dim={dim}")
    inv_freq = theta ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[:, None] * inv_freq[None]  # (N, dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (N, dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` (B, H, N, D) by position: the rotate-half convention, in the tables' dtype."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.to(cos.dtype) * cos + rotated.to(cos.dtype) * sin).to(x.dtype)


class SDPAttnProcessor:
    """Attention through torch SDPA: QK-norm (when the module has one) first, then the rotary embedding. Runs on
    either projection layout."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        heads = attn.heads
        if encoder_hidden_states is None and hasattr(attn, "to_qkv"):
            q, k, v = rearrange(attn.to_qkv(hidden_states), "b n (three h d) -> three b h n d", three=3, h=heads)
        else:
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            q = rearrange(attn.to_q(hidden_states), "b n (h d) -> b h n d", h=heads)
            if hasattr(attn, "to_kv"):
                k, v = rearrange(attn.to_kv(context), "b n (two h d) -> two b h n d", two=2, h=heads)
            else:
                k = rearrange(attn.to_k(context), "b n (h d) -> b h n d", h=heads)
                v = rearrange(attn.to_v(context), "b n (h d) -> b h n d", h=heads)
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


# ------------------------------------------------------------------------------------------ projection layouts

# (fused name, the separate names it stacks) for a self-attention and for a cross-attention
SELF, CROSS = ("to_qkv", ("to_q", "to_k", "to_v")), ("to_kv", ("to_k", "to_v"))


def _parts(attn: Attention) -> tuple[str, tuple[str, ...]]:
    return CROSS if attn.is_cross_attention else SELF


def _stacked(layers: list[nn.Linear]) -> nn.Linear:
    first = layers[0]
    bias = first.bias is not None
    out = nn.Linear(first.in_features, sum(layer.out_features for layer in layers), bias=bias)
    out = out.to(device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(torch.cat([layer.weight for layer in layers]))
        if bias:
            out.bias.copy_(torch.cat([layer.bias for layer in layers]))
    out.weight.requires_grad_(first.weight.requires_grad)
    if bias:
        out.bias.requires_grad_(first.bias.requires_grad)
    return out


def _replace(attn: Attention, names: tuple[str, ...], new: dict[str, nn.Module]) -> None:
    """Put `new` where the first of `names` was among attn's submodules, and drop `names`: the order of the
    parameters (which the optimizer's state follows) stays that of the layout, however often it is switched."""
    items, placed = [], False
    for name, module in attn._modules.items():
        if name in names:
            if not placed:
                items.extend(new.items())
                placed = True
            continue
        items.append((name, module))
    attn._modules.clear()
    attn._modules.update(items)


def fuse_projections(attn: Attention) -> None:
    """Replace q/k/v (self-attention) or k/v (cross-attention) by one stacked projection holding the same weights."""
    fused, names = _parts(attn)
    if hasattr(attn, fused):
        return
    _replace(attn, names, {fused: _stacked([getattr(attn, n) for n in names])})


def split_projections(attn: Attention) -> None:
    """Undo `fuse_projections`: separate projections holding the slices of the stacked one."""
    fused, names = _parts(attn)
    if not hasattr(attn, fused):
        return
    whole: nn.Linear = getattr(attn, fused)
    size = whole.out_features // len(names)
    parts = {}
    for i, n in enumerate(names):
        part = nn.Linear(whole.in_features, size, bias=whole.bias is not None)
        part = part.to(device=whole.weight.device, dtype=whole.weight.dtype)
        with torch.no_grad():
            part.weight.copy_(whole.weight[i * size : (i + 1) * size])
            if whole.bias is not None:
                part.bias.copy_(whole.bias[i * size : (i + 1) * size])
        part.requires_grad_(whole.weight.requires_grad)
        parts[n] = part
    _replace(attn, (fused,), parts)


def is_fused(attn: Attention) -> bool:
    return hasattr(attn, _parts(attn)[0])


def convert_layout(state_dict: dict, attentions: dict[str, tuple[bool, bool]]) -> None:
    """Rewrite, in place, the projection keys of the attention modules `attentions` ({module path: (fused, cross)},
    paths relative to the model; keys may carry any prefix before them) into that layout. Keys already in it, and
    keys of other modules, stay as they are."""
    for key in list(state_dict):
        match = re.match(r"^(.*?)((?:\w+\.\d+\.)?\w+)\.(to_\w+)\.(weight|bias)$", key)
        if match is None or key not in state_dict:
            continue
        prefix, path, name, kind = match.groups()
        if path not in attentions:
            continue
        want_fused, cross = attentions[path]
        fused, names = CROSS if cross else SELF
        base = f"{prefix}{path}."
        if want_fused and name in names:
            if all(f"{base}{n}.{kind}" in state_dict for n in names):
                state_dict[f"{base}{fused}.{kind}"] = torch.cat([state_dict.pop(f"{base}{n}.{kind}") for n in names])
        elif not want_fused and name == fused:
            for n, part in zip(names, state_dict.pop(key).chunk(len(names)), strict=True):
                state_dict[f"{base}{n}.{kind}"] = part.clone()


# every attention of a model at once (STDiT's hooks: the state dict in the separate layout, loads into the model's own)


def attention_modules(model: nn.Module) -> dict[str, Attention]:
    """{module path: attention} of every diffusers attention in `model`."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Attention)}


def any_fused(model: nn.Module) -> bool:
    return any(is_fused(a) for a in attention_modules(model).values())


def to_own_layout(model: nn.Module, state_dict: dict) -> None:
    """`state_dict` (either layout) in the layout of `model`'s attentions, in place."""
    convert_layout(state_dict, {p: (is_fused(a), a.is_cross_attention) for p, a in attention_modules(model).items()})


def to_separate_layout(model: nn.Module, state_dict: dict) -> None:
    """`model`'s `state_dict` with separate q/k/v projections, in place."""
    convert_layout(state_dict, {p: (False, a.is_cross_attention) for p, a in attention_modules(model).items()})


class FusableProjections:
    """For a diffusers model of attentions: fuse or split all their projections; its state dict always in the
    separate layout (exports, checkpoints and hashes do not depend on the switch), and a state dict of either layout
    loading into the model's own (torch's load_state_dict and diffusers' from_pretrained)."""

    def keep_separate_layout(self) -> None:
        """Register the state-dict hooks; call once at the end of __init__."""
        self.register_state_dict_post_hook(_separate_layout_on_save)
        self.register_load_state_dict_pre_hook(_own_layout_on_load)

    def fuse_projections(self):
        """One q/k/v projection per self-attention, one k/v projection per cross-attention (same weights); before
        the optimizer is made, which must see the fused parameters."""
        for attn in attention_modules(self).values():
            fuse_projections(attn)
        return self

    def split_projections(self):
        """Back to separate q, k and v projections (same weights)."""
        for attn in attention_modules(self).values():
            split_projections(attn)
        return self

    @property
    def projections_fused(self) -> bool:
        return any_fused(self)

    def _fix_state_dict_keys_on_load(self, state_dict) -> None:
        """diffusers' from_pretrained hook: a checkpoint in either projection layout, in this model's."""
        super()._fix_state_dict_keys_on_load(state_dict)
        to_own_layout(self, state_dict)


def _separate_layout_on_save(model: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    if any_fused(model):
        to_separate_layout(model, state_dict)


def _own_layout_on_load(model: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    to_own_layout(model, state_dict)
