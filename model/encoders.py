"""The frozen encoders: a video VAE (or an exact patch autoencoder in pixel space) and a T5 text encoder.

VAE specs: "none" or "none:F" (pixel space: space-to-depth by F, exactly invertible, for the toy world), or a
diffusers AutoencoderKL / AutoencoderKLCogVideoX by hub id or local folder (a VAE folder, or a pipeline folder
with a vae/ subfolder). A 2D VAE encodes the frames of a video one by one.
Text-encoder specs: a transformers T5EncoderModel with its tokenizer, by hub id or local folder (or a pipeline
folder with text_encoder/ and tokenizer/).
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange

from model.hub import PRODUCTION_MODELS, resolve

# the production encoders (Open-Sora 1.0/1.1): the SD VAE and T5 v1.1 XXL
DEFAULT_VAE = PRODUCTION_MODELS["precompute.vae"]
DEFAULT_TEXT_ENCODER = PRODUCTION_MODELS["precompute.text_encoder"]


def _from_pretrained(load, spec: str, name: str, marker: str = "config.json", **kwargs):
    """load(spec) for a model folder or hub id; load(spec, subfolder=name) for a pipeline folder or hub id.
    A hub id loads from its folder in the Hugging Face cache when it is there (model.hub.resolve)."""
    spec = resolve(spec)
    path = Path(spec)
    if path.exists() and not (path / marker).exists() and not (path / name / marker).exists():
        raise ValueError(f"{spec}: no {marker} here or in {name}/; give a model folder, a pipeline folder or a hub id")
    if path.exists():
        return load(spec, **kwargs) if (path / marker).exists() else load(spec, subfolder=name, **kwargs)
    try:
        return load(spec, **kwargs)
    except (OSError, ValueError):
        return load(spec, subfolder=name, **kwargs)


class PatchAutoencoder:
    """Pixel space as latents: (B, 3, T, H, W) <-> (B, 3*F*F, T, H/F, W/F) by space-to-depth; exact both ways."""

    def __init__(self, factor: int = 4):
        if factor < 1:
            raise ValueError(f"patch autoencoder factor={factor} must be >= 1")
        self.factor = factor
        self.spatial_compression = factor
        self.temporal_compression = 1
        self.latent_channels = 3 * factor * factor
        self.spec = f"none:{factor}"

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return rearrange(video, "b c t (h p) (w q) -> b (c p q) t h w", p=f, q=f)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return rearrange(latents, "b (c p q) t h w -> b c t (h p) (w q)", p=f, q=f)


class DiffusersVAE:
    """A diffusers VAE with latent scaling (and shift) applied: encode gives the training-space latents."""

    def __init__(self, spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32, micro_batch: int = 16):
        from diffusers import AutoencoderKL, AutoencoderKLCogVideoX

        config = _from_pretrained(AutoencoderKL.load_config, spec, "vae")
        cls = AutoencoderKLCogVideoX if config.get("_class_name") == "AutoencoderKLCogVideoX" else AutoencoderKL
        self.model = _from_pretrained(cls.from_pretrained, spec, "vae", torch_dtype=dtype).to(device).eval()
        self.is_3d = cls is AutoencoderKLCogVideoX
        self.device, self.dtype, self.micro_batch = device, dtype, micro_batch
        self.scaling = float(self.model.config.scaling_factor)
        self.shift = float(self.model.config.get("shift_factor") or 0.0)
        blocks = len(self.model.config.block_out_channels)
        self.spatial_compression = 2 ** (blocks - 1)
        self.temporal_compression = int(self.model.config.get("temporal_compression_ratio", 1)) if self.is_3d else 1
        self.latent_channels = int(self.model.config.latent_channels)
        self.spec = spec

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, C, T', H/f, W/f), the mean of the posterior, scaled."""
        video = video.to(self.device, self.dtype)
        if self.is_3d:
            latents = self.model.encode(video).latent_dist.mode()
        else:
            frames = rearrange(video, "b c t h w -> (b t) c h w")
            chunks = [self.model.encode(x).latent_dist.mode() for x in frames.split(self.micro_batch)]
            latents = rearrange(torch.cat(chunks), "(b t) c h w -> b c t h w", b=video.shape[0])
        return ((latents - self.shift) * self.scaling).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = (latents / self.scaling + self.shift).to(self.device, self.dtype)
        if self.is_3d:
            return self.model.decode(latents).sample.float()
        frames = rearrange(latents, "b c t h w -> (b t) c h w")
        chunks = [self.model.decode(x).sample for x in frames.split(self.micro_batch)]
        return rearrange(torch.cat(chunks), "(b t) c h w -> b c t h w", b=latents.shape[0]).float()


def load_vae(spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    if spec == "none" or spec.startswith("none:"):
        return PatchAutoencoder(int(spec.split(":", 1)[1]) if ":" in spec else 4)
    return DiffusersVAE(spec, device, dtype)


class TextEncoder:
    """T5 encoder: captions -> token embeddings (B, L, C) and a mask (B, L), at most `max_length` tokens."""

    def __init__(self, spec: str, max_length: int = 300, device: str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import AutoTokenizer, T5EncoderModel

        self.tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, spec, "tokenizer", "tokenizer_config.json")
        self.model = _from_pretrained(T5EncoderModel.from_pretrained, spec, "text_encoder", dtype=dtype)
        self.model.to(device).eval()
        self.max_length, self.device, self.spec = max_length, device, spec
        self.channels = int(self.model.config.d_model)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(
            list(texts), max_length=self.max_length, truncation=True, padding="longest", return_tensors="pt"
        ).to(self.device)
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return hidden.float(), tokens.attention_mask.bool()


def describe(vae, text: TextEncoder | None) -> dict:
    """What identifies the encoders in a cache key and in the saved metadata."""
    out = {"vae": vae.spec, "vae_spatial": vae.spatial_compression, "vae_temporal": vae.temporal_compression}
    if text is not None:
        out |= {"text_encoder": text.spec, "max_text_tokens": text.max_length, "text_channels": text.channels}
    return out
