"""The STDiT presets: sizes by name (Open-Sora's and DiT's), data the command lines validate without loading the
network."""

from __future__ import annotations

# Architecture sizes. Everything else (channels, caption width, base size) is set by the caller.
STDIT_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16, "patch_size": 2},
    "S/2": {"num_layers": 12, "num_attention_heads": 6, "attention_head_dim": 64, "patch_size": 2},
    "B/2": {"num_layers": 12, "num_attention_heads": 12, "attention_head_dim": 64, "patch_size": 2},
    "XL/2": {"num_layers": 28, "num_attention_heads": 16, "attention_head_dim": 72, "patch_size": 2},
}


def preset_config(name: str, **overrides) -> dict:
    """The constructor arguments of preset `name`, with `overrides` applied."""
    if name not in STDIT_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(STDIT_PRESETS)}")
    return {**STDIT_PRESETS[name], **overrides}
