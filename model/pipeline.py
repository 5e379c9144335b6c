"""Text-to-video generation as a diffusers pipeline: `T2VPipeline.from_pretrained(folder)(prompt)`.

The folder holds the STDiT (transformer/), the scheduler (scheduler/) and model_index.json. The frozen encoders
are referenced, not copied (T5-XXL alone is about 9.5 GB in bf16): model_index.json records their specs (hub id
or path, as `t2v precompute` takes them) and they are loaded from there; a relative path that exists inside the
folder (a small encoder bundled with a registered version) is taken from there first. model_index.json also keeps
the training's flow settings (the timestep shift) and the default sample shape (frames, height, width).
Prompts go through the same clean-up as training captions (`clean_caption`), so the text encoder sees text of the
form it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from tqdm.auto import tqdm

from model.buckets import latent_frames
from model.encoders import DEFAULT_TEXT_ENCODER, DEFAULT_VAE
from model.flow import FlowConfig, sample
from model.stdit import STDiT


def to_frames(video: torch.Tensor) -> np.ndarray:
    """A decoded video (3, T, H, W) in [-1, 1] as uint8 frames (T, H, W, 3)."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


class T2VPipeline(DiffusionPipeline):
    """STDiT + rectified-flow Euler sampling with classifier-free guidance, encoders loaded by spec."""

    model_cpu_offload_seq = "transformer"

    def __init__(
        self,
        transformer: STDiT,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae_spec: str = DEFAULT_VAE,
        text_encoder_spec: str = DEFAULT_TEXT_ENCODER,
        max_text_tokens: int = 300,
        flow: dict | None = None,
        default_num_frames: int = 16,
        default_height: int = 256,
        default_width: int = 256,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)
        self.register_to_config(
            vae_spec=vae_spec,
            text_encoder_spec=text_encoder_spec,
            max_text_tokens=max_text_tokens,
            flow=flow or {},
            default_num_frames=default_num_frames,
            default_height=default_height,
            default_width=default_width,
        )
        self._encoders = None
        self.folder: Path | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if Path(pretrained_model_name_or_path).is_dir():
            pipe.folder = Path(pretrained_model_name_or_path)
        return pipe

    def resolve_spec(self, spec: str) -> str:
        """An encoder spec as given, or the path inside this pipeline's folder when it was bundled there."""
        if self.folder is not None and not Path(spec).is_absolute() and (self.folder / spec).exists():
            return str(self.folder / spec)
        return spec

    def flow_config(self) -> FlowConfig:
        known = {f.name for f in fields(FlowConfig)}
        return FlowConfig(**{k: v for k, v in dict(self.config.flow or {}).items() if k in known})

    def encoders(self):
        """(vae, text encoder), loaded on first use from their specs."""
        if self._encoders is None:
            from model.encoders import TextEncoder, load_vae

            device = str(self.transformer.device)
            self._encoders = (
                load_vae(self.resolve_spec(self.config.vae_spec), device),
                TextEncoder(self.resolve_spec(self.config.text_encoder_spec), self.config.max_text_tokens, device),
            )
        return self._encoders

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.0,
        generator: torch.Generator | None = None,
        flow: FlowConfig | None = None,
        progress: bool = True,
    ) -> list[np.ndarray]:
        """One uint8 video (T, H, W, 3) per prompt; shape defaults to the one the model was trained at."""
        from model.prompts import clean_caption

        prompts = [clean_caption(p) for p in ([prompt] if isinstance(prompt, str) else list(prompt))]
        num_frames = num_frames or self.config.default_num_frames
        height = height or self.config.default_height
        width = width or self.config.default_width
        vae, text_encoder = self.encoders()
        f = vae.spatial_compression
        if height % (f * self.transformer.config.patch_size) or width % (f * self.transformer.config.patch_size):
            raise ValueError(
                f"height and width must be multiples of {f * self.transformer.config.patch_size} "
                f"(VAE factor {f} x patch {self.transformer.config.patch_size}), got {height}x{width}"
            )
        text, mask = text_encoder.encode(prompts)
        frames = latent_frames(num_frames, vae.temporal_compression)
        shape = (len(prompts), self.transformer.config.in_channels, frames, height // f, width // f)
        flow = flow or self.flow_config()
        latents = sample(
            self.transformer,
            shape,
            text,
            mask,
            cfg=flow,
            num_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            scheduler=self.scheduler,
            progress=progress,
        )
        videos = []
        for z in tqdm(latents, desc="decoding", disable=not progress or len(prompts) == 1, leave=False):
            videos.append(to_frames(vae.decode(z[None].float().cpu())[0]))
        return videos


def build_pipeline(
    transformer: STDiT,
    vae_spec: str,
    text_encoder_spec: str,
    max_text_tokens: int,
    flow: FlowConfig | None = None,
    sample_shape: tuple[int, int, int] = (16, 256, 256),
) -> T2VPipeline:
    """A pipeline around a trained transformer; `flow` as trained, `sample_shape` (frames, height, width) the
    default output."""
    flow = flow or FlowConfig()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=flow.num_train_timesteps, shift=1.0)
    frames, height, width = sample_shape
    return T2VPipeline(
        transformer, scheduler, vae_spec, text_encoder_spec, max_text_tokens, asdict(flow), frames, height, width
    )
