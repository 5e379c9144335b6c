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
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from einops import rearrange

from model.weights.hub import resolve

# the production encoders (Open-Sora 1.0/1.1): the SD VAE and T5 v1.1 XXL


def _from_pretrained(load, spec: str, name: str, marker: str = "config.json", **kwargs):
    """load(spec) for a model folder or hub id; load(spec, subfolder=name) for a pipeline folder or hub id.
    A hub id loads from its folder in the Hugging Face cache when it is there (model.weights.hub.resolve)."""
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


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """Pixel space as latents: (B, 3, T, H, W) <-> (B, 3*F*F, T, H/F, W/F) by space-to-depth; exact both ways.

    A weightless diffusers model, so that a pipeline holds, saves and moves it like any other VAE."""

    @register_to_config
    def __init__(self, factor: int = 4):
        super().__init__()
        if factor < 1:
            raise ValueError(f"patch autoencoder factor={factor} must be >= 1")
        # diffusers and accelerate read a model's device and dtype from its first parameter (offload hooks too), and
        # load a model from a weights file: one frozen number gives them both
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        self.factor = factor
        self.spatial_compression = factor
        self.temporal_compression = 1
        self.latent_channels = 3 * factor * factor
        self.spec = f"none:{factor}"

    @apply_forward_hook
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return rearrange(video, "b c t (h p) (w q) -> b (c p q) t h w", p=f, q=f)

    @apply_forward_hook
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return rearrange(latents, "b (c p q) t h w -> b c t (h p) (w q)", p=f, q=f)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(video))


def is_patch_spec(spec: str) -> bool:
    return spec == "none" or spec.startswith("none:")


def load_vae_model(spec: str, dtype: torch.dtype | None = None):
    """The VAE module a spec names: a PatchAutoencoder, or a diffusers AutoencoderKL / AutoencoderKLCogVideoX."""
    if is_patch_spec(spec):
        return PatchAutoencoder(int(spec.split(":", 1)[1]) if ":" in spec else 4)
    from diffusers import AutoencoderKL, AutoencoderKLCogVideoX

    config = _from_pretrained(AutoencoderKL.load_config, spec, "vae")
    cls = AutoencoderKLCogVideoX if config.get("_class_name") == "AutoencoderKLCogVideoX" else AutoencoderKL
    kwargs = {"torch_dtype": dtype} if dtype is not None else {}
    return _from_pretrained(cls.from_pretrained, spec, "vae", **kwargs).eval()


class DiffusersVAE:
    """A diffusers VAE with latent scaling (and shift) applied: encode gives the training-space latents.

    It computes in the dtype of its model at each call, on its device, or on the device an offload hook moves it to
    (a pipeline may move, cast or offload it)."""

    def __init__(self, model, spec: str = "", micro_batch: int = 16):
        from diffusers import AutoencoderKLCogVideoX

        self.model, self.spec, self.micro_batch = model, spec, micro_batch
        self.is_3d = isinstance(model, AutoencoderKLCogVideoX)
        self.scaling = float(model.config.scaling_factor)
        self.shift = float(model.config.get("shift_factor") or 0.0)
        blocks = len(model.config.block_out_channels)
        self.spatial_compression = 2 ** (blocks - 1)
        self.temporal_compression = int(model.config.get("temporal_compression_ratio", 1)) if self.is_3d else 1
        self.latent_channels = int(model.config.latent_channels)

    @property
    def device(self) -> torch.device:
        hook = getattr(self.model, "_hf_hook", None)
        return getattr(hook, "execution_device", None) or self.model.device

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, C, T', H/f, W/f), the mean of the posterior, scaled."""
        video = video.to(self.device, self.model.dtype)
        if self.is_3d:
            latents = self.model.encode(video).latent_dist.mode()
        else:
            frames = rearrange(video, "b c t h w -> (b t) c h w")
            chunks = [self.model.encode(x).latent_dist.mode() for x in frames.split(self.micro_batch)]
            latents = rearrange(torch.cat(chunks), "(b t) c h w -> b c t h w", b=video.shape[0])
        return ((latents - self.shift) * self.scaling).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = (latents / self.scaling + self.shift).to(self.device, self.model.dtype)
        if self.is_3d:
            return self.model.decode(latents).sample.float()
        frames = rearrange(latents, "b c t h w -> (b t) c h w")
        chunks = [self.model.decode(x).sample for x in frames.split(self.micro_batch)]
        return rearrange(torch.cat(chunks), "(b t) c h w -> b c t h w", b=latents.shape[0]).float()


def video_vae(model, spec: str = ""):
    """encode/decode in training space for a VAE module: a PatchAutoencoder as it is, a diffusers VAE wrapped."""
    return model if isinstance(model, PatchAutoencoder) else DiffusersVAE(model, spec)


def load_vae(spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    return video_vae(load_vae_model(spec, dtype).to(device), spec)


def load_text_encoder(spec: str, dtype: torch.dtype | None = None):
    """(tokenizer, T5 encoder model) for a spec."""
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, spec, "tokenizer", "tokenizer_config.json")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = _from_pretrained(T5EncoderModel.from_pretrained, spec, "text_encoder", **kwargs).eval()
    return tokenizer, model


@torch.no_grad()
def encode_text(
    tokenizer, model, texts: list[str], max_length: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings (B, L, C) in the model's dtype and a mask (B, L) of the texts, at most `max_length` tokens,
    padded to the longest."""
    tokens = tokenizer(list(texts), max_length=max_length, truncation=True, padding="longest", return_tensors="pt")
    tokens = tokens.to(device)
    hidden = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
    return hidden, tokens.attention_mask.bool()


class TextEncoder:
    """T5 encoder: captions -> token embeddings (B, L, C) and a mask (B, L), at most `max_length` tokens."""

    def __init__(self, spec: str, max_length: int = 300, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.tokenizer, self.model = load_text_encoder(spec, dtype)
        self.model.to(device)
        self.max_length, self.device, self.spec = max_length, device, spec
        self.channels = int(self.model.config.d_model)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, mask = encode_text(self.tokenizer, self.model, texts, self.max_length, self.device)
        return hidden.float(), mask


def describe(vae, text: TextEncoder | None) -> dict:
    """What identifies the encoders in a cache key and in the saved metadata."""
    out = {"vae": vae.spec, "vae_spatial": vae.spatial_compression, "vae_temporal": vae.temporal_compression}
    if text is not None:
        out |= {"text_encoder": text.spec, "max_text_tokens": text.max_length, "text_channels": text.channels}
    return out
