"""Parameter counts and training FLOPs of the model presets at a video shape (`t2v model`)."""

from __future__ import annotations

from model.flops import Arch, forward_flops, param_counts
from model.stdit import preset_config


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
        config = {
            **preset_config(name),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "caption_channels": caption_channels,
            "caption_max_length": text_tokens,
            "mlp_ratio": 4.0,
            "qk_norm": False,
            "attention_mode": "spatial_temporal",
        }
        shape = {
            "batch": batch,
            "frames": frames,
            "height": height // vae_factor,
            "width": width // vae_factor,
        }
        st = forward_flops(Arch.from_config(config), text_tokens=text_tokens, **shape).train_step()
        full = forward_flops(Arch.from_config(config, "full"), text_tokens=text_tokens, **shape).train_step()
        params = param_counts(Arch.from_config(config))
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


def production_arch(preset: str, text_tokens: int) -> Arch:
    """A preset with the production encoders' sizes: SD VAE latents (4 channels), T5-XXL features (4096)."""
    return Arch.from_config(
        {**preset_config(preset), "in_channels": 4, "out_channels": 4, "caption_channels": 4096,
         "caption_max_length": text_tokens, "mlp_ratio": 4.0, "qk_norm": False, "attention_mode": "spatial_temporal"}
    )  # fmt: skip
