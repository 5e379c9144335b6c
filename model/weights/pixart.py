"""Build an STDiT from a text-to-image PixArt-alpha checkpoint (diffusers `PixArtTransformer2DModel`).

The spatial part (patch embedding, adaLN-single, caption projection, spatial and cross attention, MLPs, final
layer) is copied; the temporal attention is new with a zero output projection, so the imported model is the PixArt
model applied to each frame. The learned null caption is new as well (PixArt's pipelines encode "" instead).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import PixArtTransformer2DModel

from model.networks.stdit import STDiT, is_temporal_parameter
from model.weights.hub import resolve


def stdit_config_from_pixart(pixart_config, **overrides) -> dict:
    """STDiT constructor arguments that reproduce a PixArt transformer's spatial architecture."""
    c = pixart_config
    if c.get("use_additional_conditions") or (c.get("use_additional_conditions") is None and c.sample_size == 128):
        raise ValueError(
            "this PixArt checkpoint uses resolution/aspect-ratio micro-conditions (e.g. PixArt-XL-2-1024-MS), "
            "which STDiT does not take; import PixArt-XL-2-512x512 or another checkpoint without them"
        )
    if c.norm_type != "ada_norm_single" or c.caption_channels is None:
        raise ValueError("expected a PixArt-alpha transformer (norm_type='ada_norm_single' with caption_channels)")
    interpolation_scale = c.interpolation_scale if c.interpolation_scale is not None else max(c.sample_size // 64, 1)
    config = {
        "in_channels": c.in_channels,
        "out_channels": c.out_channels,
        "patch_size": c.patch_size,
        "num_layers": c.num_layers,
        "num_attention_heads": c.num_attention_heads,
        "attention_head_dim": c.attention_head_dim,
        "caption_channels": c.caption_channels,
        "sample_size": c.sample_size,
        "interpolation_scale": interpolation_scale,
        "activation_fn": c.activation_fn,
        "attention_bias": c.attention_bias,
        "norm_eps": c.norm_eps,
        "attention_mode": "spatial_temporal",
        "qk_norm": False,
    }
    return {**config, **overrides}


def stdit_from_pixart(pixart: PixArtTransformer2DModel | str | Path, **overrides) -> STDiT:
    """An STDiT whose spatial weights are `pixart`'s (a model, a local folder or a hub id with subfolder)."""
    if not isinstance(pixart, PixArtTransformer2DModel):
        # A transformer folder loads as is; a pipeline folder or hub id keeps it in transformer/.
        path = resolve(str(pixart))
        subfolder = None if (Path(path) / "config.json").exists() else "transformer"
        pixart = PixArtTransformer2DModel.from_pretrained(path, subfolder=subfolder)
    if overrides.get("attention_mode", "spatial_temporal") != "spatial_temporal":
        raise ValueError("PixArt import builds the spatial-temporal STDiT; leave attention_mode unset")
    model = STDiT(**stdit_config_from_pixart(pixart.config, **overrides))
    source = pixart.state_dict()
    missing, unexpected = model.load_state_dict(source, strict=False)
    new = [k for k in missing if not (is_temporal_parameter(k) or k == "y_embedding")]
    if new or unexpected:
        raise ValueError(
            f"PixArt weights do not map onto STDiT: missing {new[:5]}, unexpected {unexpected[:5]}; "
            "the checkpoint is not a diffusers PixArtTransformer2DModel of a supported layout"
        )
    model.zero_temporal_output()
    return model.to(next(iter(source.values())).dtype if source else torch.float32)
