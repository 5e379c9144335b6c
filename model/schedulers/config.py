"""The rectified-flow settings (timestep sampling, shift, caption dropout): read by the training settings without
loading the scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field


def _setting(default, help: str):
    """A field with its description, read by the settings CLI (components.common.settings)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class FlowConfig:
    """Rectified flow: timestep sampling, the resolution- and length-aware shift, caption dropout."""

    num_train_timesteps: int = _setting(1000, "timesteps of the discrete schedule the model is conditioned on")
    logit_mean: float = _setting(0.0, "mean of the logit-normal timestep distribution")
    logit_std: float = _setting(1.0, "standard deviation of the logit-normal timestep distribution")
    resolution_shift: bool = _setting(True, "shift timesteps towards noise for larger and longer latents")
    shift: float | None = _setting(None, "a fixed shift in place of the resolution-aware one (SD3 uses 3.0)")
    base_pixels: int = _setting(512 * 512, "image area at which the shift is 1")
    base_latent_frames: int = _setting(1, "latent frames at which the shift is 1")
    # image pixels per latent pixel along each side: the VAE's factor, read from the data the model trains on (the
    # precompute's meta.json) or the pipeline's VAE, never set by hand
    spatial_compression: int = field(default=8, metadata={"derived": "the VAE of the latents (precompute's meta.json)"})
    caption_dropout: float = _setting(0.1, "share of captions replaced by the null caption (for guidance)")
    uniform_share: float = _setting(
        0.0,
        "share of timesteps drawn uniformly on (0, 1), unshifted, in place of the shifted logit-normal: the last "
        "sampling steps run at t < 0.1, which logit-normal timesteps shifted by 3 almost never reach",
    )

    def __post_init__(self):
        if not 0.0 <= self.uniform_share <= 1.0:
            raise ValueError(f"uniform_share={self.uniform_share} must be between 0 and 1")
