"""Parameter counts and training FLOPs of the model presets at a video shape (`t2v model`), and the one place a
preset's architecture numbers are made for the planner, the memory model and the benchmarks."""

from __future__ import annotations

import inspect

from model.networks.presets import preset_config
from model.planning.flops import Arch, forward_flops, param_counts


def preset_arch(
    preset: str,
    *,
    in_channels: int = 4,
    out_channels: int | None = None,
    caption_channels: int = 4096,
    text_tokens: int = 120,
    overrides: dict | None = None,
    variant: str | None = None,
) -> Arch:
    """The numbers FLOPs and memory depend on, for STDiT preset `preset` (with `overrides`) fed by encoders of these
    sizes (defaults: SD VAE latents, 4 channels; T5-XXL features, 4096 x `text_tokens`); `out_channels` None is
    STDiT's own default, the input channels (8 for 4 input channels is Open-Sora 1.0's learned sigma). Every other
    number is STDiT's default."""
    from model.networks.stdit import STDiT  # here: the planner's settings load without torch

    signature = inspect.signature(STDiT.__init__).parameters.items()
    defaults = {k: v.default for k, v in signature if v.default is not inspect.Parameter.empty}
    config = {
        **defaults,
        **preset_config(preset, **(overrides or {})),
        "in_channels": in_channels,
        "out_channels": out_channels,
        "caption_channels": caption_channels,
        "caption_max_length": text_tokens,
    }
    return Arch.from_config(config, variant)


def summarize(
    presets: list[str],
    *,
    frames: int,
    height: int,
    width: int,
    vae_factor: int = 8,
    in_channels: int = 4,
    out_channels: int = 8,
    caption_channels: int = 4096,
    text_tokens: int = 120,
    batch: int = 1,
) -> list[dict]:
    """One row per preset: parameters, and training-step TFLOPs of STDiT and of the full-attention baseline."""
    if height % vae_factor or width % vae_factor:
        raise ValueError(f"video size {height}x{width} must be divisible by the VAE factor {vae_factor}")
    rows = []
    for name in presets:
        sizes = {"in_channels": in_channels, "out_channels": out_channels, "caption_channels": caption_channels,
                 "text_tokens": text_tokens}  # fmt: skip
        shape = {
            "batch": batch,
            "frames": frames,
            "height": height // vae_factor,
            "width": width // vae_factor,
        }
        st = forward_flops(preset_arch(name, **sizes), text_tokens=text_tokens, **shape).train_step()
        full = forward_flops(preset_arch(name, **sizes, variant="full"), text_tokens=text_tokens, **shape).train_step()
        params = param_counts(preset_arch(name, **sizes))
        rows.append(
            {
                "preset": name,
                "params_m": params["total"] / 1e6,
                "temporal_params_m": params["temporal"] / 1e6,
                "stdit_tflops": st / 1e12,
                "full_tflops": full / 1e12,
                "full_over_stdit": full / st,
            }
        )
    return rows
