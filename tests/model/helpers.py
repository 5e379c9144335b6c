"""Tiny STDiT models and inputs for the model tests."""

import torch

from model.networks.presets import preset_config
from model.networks.stdit import STDiT

CAPTION_CHANNELS, TEXT_TOKENS = 16, 6


def tiny_stdit(**overrides) -> STDiT:
    config = preset_config(
        "tiny",
        in_channels=4,
        caption_channels=CAPTION_CHANNELS,
        caption_max_length=TEXT_TOKENS,
        sample_size=8,
    )
    return STDiT(**{**config, **overrides})


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Random weights everywhere, so that no path is silently zero (a fresh model zeroes its outputs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(batch=2, frames=3, height=8, width=8, channels=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, frames, height, width, generator=g)
    t = torch.rand(batch, generator=g) * 1000
    text = torch.randn(batch, TEXT_TOKENS, CAPTION_CHANNELS, generator=g)
    return x, t, text
