"""Text-to-video generation as a diffusers pipeline, loaded and called as diffusers' own video pipelines are:

    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    out = pipe("a red circle moves left", num_videos_per_prompt=2, generator=torch.Generator().manual_seed(0))
    export_to_video(out.frames[0], "video.mp4", fps=8)

Components: transformer (STDiT), scheduler (FlowMatchEulerDiscreteScheduler for the models this product trains;
DDPMScheduler configured as IDDPM for Open-Sora 1.0's imported weights, model.schedulers.iddpm), vae (a diffusers
AutoencoderKL or AutoencoderKLCogVideoX, or the exact PatchAutoencoder of pixel space), text_encoder (T5EncoderModel)
and tokenizer.

The folder holds model_index.json, a subfolder per component and t2v_pipeline.py, the module that diffusers' loader
for pipelines defined outside the library imports (`_class_name` is ["t2v_pipeline", "T2VPipeline"]); it only
imports this module, so the t2v-pipeline package must be installed where the folder is loaded. The encoders are
either written into the folder (vae/, text_encoder/, tokenizer/) or kept as references (T5-XXL alone is about 9.5 GB
in bf16): model_index.json then records their specs (hub id or path, as `t2v precompute` takes them) and the
pipeline loads them from there when it is built, on the transformer's device and in its dtype. model_index.json also
keeps the training's flow settings (the timestep shift) and the default sample shape (frames, height, width).
Prompts go through the same clean-up as training captions (`clean_caption`), so the text encoder sees text of the
form it was trained on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from model.inference.folder import CODE, CODE_FILE, ENCODERS, loading_kwargs
from model.networks.stdit import STDiT
from model.planning.buckets import latent_frames
from model.schedulers.config import FlowConfig
from model.schedulers.flow import guided_velocity, sampling_sigmas
from model.schedulers.iddpm import guided_output, null_caption, respaced_timesteps
from model.weights.encoders import encode_text, load_text_encoder, load_vae_model, video_vae

log = logging.getLogger(__name__)

OUTPUT_TYPES = ("np", "pt", "pil", "latent")
FLOW_STEPS, IDDPM_STEPS = 30, 100  # default sampling steps: rectified flow, and IDDPM as Open-Sora 1.0 sampled


@dataclass
class T2VPipelineOutput(BaseOutput):
    """`frames`: per video, its frames. "np": an array (B, T, H, W, 3) in [0, 1]; "pt": a tensor (B, T, 3, H, W) in
    [0, 1]; "pil": lists of PIL images; "latent": the latents (B, C, T', H/f, W/f)."""

    frames: np.ndarray | torch.Tensor | list


def to_frames(video: torch.Tensor) -> np.ndarray:
    """A decoded video (3, T, H, W) in [-1, 1] as uint8 frames (T, H, W, 3)."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames in [0, 1] (the pipeline's "np" output) as uint8."""
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


class T2VPipeline(DiffusionPipeline):
    """STDiT + rectified-flow Euler sampling with classifier-free guidance (or, with a DDPMScheduler, IDDPM sampling
    as Open-Sora 1.0's weights were trained for)."""

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components: ClassVar[list[str]] = ["vae", "text_encoder", "tokenizer"]
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        transformer: STDiT,
        scheduler: FlowMatchEulerDiscreteScheduler | DDPMScheduler,
        vae=None,
        text_encoder=None,
        tokenizer=None,
        vae_spec: str | None = None,
        text_encoder_spec: str | None = None,
        max_text_tokens: int = 300,
        flow: dict | None = None,
        default_num_frames: int = 16,
        default_height: int = 256,
        default_width: int = 256,
        guidance_channels: int | None = None,
        null_caption_mask: str = "full",
        lowercase_prompts: bool = False,
        load_encoders: bool = True,
    ):
        """An encoder that is not given is loaded from its spec, unless `load_encoders` is False (a pipeline that is
        only saved, with its encoders as references). `guidance_channels`: the first N latent channels take
        classifier-free guidance (None: all); `null_caption_mask`: the learned null caption is read whole ("full") or
        under the prompt's own token mask ("prompt"), as Open-Sora 1.0's sampler reads it; `lowercase_prompts`: the
        text encoder reads prompts in lower case (Open-Sora 1.0's weights were trained so)."""
        if null_caption_mask not in ("full", "prompt"):
            raise ValueError(f"null_caption_mask={null_caption_mask!r} must be 'full' or 'prompt'")
        super().__init__()
        if load_encoders:
            device, dtype = transformer.device, transformer.dtype
            if vae is None and vae_spec:
                vae = load_vae_model(vae_spec, dtype).to(device)
            if text_encoder is None and text_encoder_spec:
                loaded_tokenizer, text_encoder = load_text_encoder(text_encoder_spec, dtype)
                text_encoder, tokenizer = text_encoder.to(device), tokenizer or loaded_tokenizer
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, scheduler=scheduler
        )
        self.register_to_config(
            vae_spec=vae_spec,
            text_encoder_spec=text_encoder_spec,
            max_text_tokens=max_text_tokens,
            flow=flow or {},
            default_num_frames=default_num_frames,
            default_height=default_height,
            default_width=default_width,
            guidance_channels=guidance_channels,
            null_caption_mask=null_caption_mask,
            lowercase_prompts=lowercase_prompts,
        )
        self.video_processor = VideoProcessor(
            vae_scale_factor=video_vae(vae).spatial_compression if vae is not None else 8
        )

    # ------------------------------------------------------------------------------------------ saving, loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' from_pretrained, trusting the folder's code file when it is the one save_pretrained writes. A
        folder saved before the encoders were components (no code file) loads too, a bundled encoder from inside it."""
        folder = Path(pretrained_model_name_or_path)
        if (folder / "model_index.json").is_file():
            kwargs = {**loading_kwargs(folder), **kwargs}
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory, write_encoders: bool = False, **kwargs):
        """diffusers' save_pretrained, plus the code file that lets DiffusionPipeline.from_pretrained load the folder.

        An encoder with a spec is kept as a reference to it unless `write_encoders`; an encoder without one (built in
        memory, or loaded from a folder that holds it) is written."""
        referenced, written = [], []
        for role, names in ENCODERS.items():
            loaded = all(getattr(self, n) is not None for n in names)
            if self.config[f"{role}_spec"] and not write_encoders:
                referenced += names
            elif loaded:
                written.append(role)
            elif self.config[f"{role}_spec"]:
                raise ValueError(f"the {role} is not loaded, so it cannot be written: build the pipeline with it")
        kept = {name: getattr(self, name) for name in referenced}
        try:
            self.register_modules(**dict.fromkeys(referenced))  # saved as [null, null]: loaded from the spec
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_modules(**kept)
        path = Path(save_directory) / "model_index.json"
        index = json.loads(path.read_text())
        index["_class_name"] = [Path(CODE_FILE).stem, type(self).__name__]
        index.update({f"{role}_spec": None for role in written})  # the folder itself is now their source
        path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        (Path(save_directory) / CODE_FILE).write_text(CODE)

    @property
    def folder(self) -> Path | None:
        """The folder this pipeline was loaded from, if any."""
        name = self.name_or_path
        return Path(name) if name and Path(name).is_dir() else None

    def flow_config(self) -> FlowConfig:
        """The flow settings the model was trained with; the VAE factor the timestep shift uses is this pipeline's
        VAE's own, when it has one loaded."""
        known = {f.name for f in fields(FlowConfig)}
        flow = FlowConfig(**{k: v for k, v in dict(self.config.flow or {}).items() if k in known})
        if self.vae is not None:
            flow = replace(flow, spatial_compression=video_vae(self.vae).spatial_compression)
        return flow

    # ---------------------------------------------------------------------------------------------- sampling

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None = None,
        num_videos_per_prompt: int = 1,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        max_sequence_length: int | None = None,
        device: torch.device | None = None,
    ):
        """(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask), each row
        repeated `num_videos_per_prompt` times. Without a negative prompt the negatives are None: guidance then
        contrasts with the model's learned null caption, the unconditional input that caption dropout trained."""
        from model.inference.prompts import clean_caption

        device = device or self._execution_device
        max_length = max_sequence_length or self.config.max_text_tokens

        def encode(texts, embeds, mask):
            if embeds is None:
                if self.text_encoder is None or self.tokenizer is None:
                    raise ValueError("this pipeline has no text encoder: pass prompt_embeds instead of prompts")
                texts = [clean_caption(t) for t in texts]
                texts = [t.lower() for t in texts] if self.config.get("lowercase_prompts") else texts
                embeds, mask = encode_text(self.tokenizer, self.text_encoder, texts, max_length, device)
            elif mask is None:
                mask = torch.ones(embeds.shape[:2], dtype=torch.bool)
            n = num_videos_per_prompt
            return embeds.to(device).repeat_interleave(n, 0), mask.to(device).bool().repeat_interleave(n, 0)

        prompts = [prompt] if isinstance(prompt, str) else prompt
        prompt_embeds, prompt_attention_mask = encode(prompts, prompt_embeds, prompt_attention_mask)
        if negative_prompt is None and negative_prompt_embeds is None:
            return prompt_embeds, prompt_attention_mask, None, None
        batch = prompt_embeds.shape[0] // num_videos_per_prompt
        negatives = [negative_prompt] * batch if isinstance(negative_prompt, str) else negative_prompt
        if negatives is not None and len(negatives) != batch:
            raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: give one, or one per prompt")
        negative_prompt_embeds, negative_prompt_attention_mask = encode(
            negatives, negative_prompt_embeds, negative_prompt_attention_mask
        )
        return prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float = 7.0,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        max_sequence_length: int | None = None,
    ) -> T2VPipelineOutput | tuple:
        """Videos for `prompt` (or `prompt_embeds`), `num_videos_per_prompt` each, in the order of the prompts; the
        shape defaults to the one the model was trained at. Guidance (`guidance_scale` != 1) contrasts with the
        negative prompt when one is given, else with the learned null caption. `generator` may be a list, one per
        video, so that a video does not depend on the others in its batch; `latents` (B, C, T', H/f, W/f) replace
        the initial noise. `callback_on_step_end(pipe, step, timestep, tensors)` is called after every step with the
        tensors named in `callback_on_step_end_tensor_inputs` and returns those it replaces."""
        if isinstance(callback_on_step_end, PipelineCallback | MultiPipelineCallbacks):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("give either prompt or prompt_embeds")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("give either negative_prompt or negative_prompt_embeds, not both")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r} must be one of {OUTPUT_TYPES}")
        if num_videos_per_prompt < 1:
            raise ValueError(f"num_videos_per_prompt={num_videos_per_prompt} must be at least 1")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback tensors {sorted(unknown)}: the callback can see {self._callback_tensor_inputs}")
        if self.vae is None:
            raise ValueError("this pipeline has no VAE: build it with one, or load it with its vae_spec")
        vae = video_vae(self.vae)
        num_frames = num_frames or self.config.default_num_frames
        height = height or self.config.default_height
        width = width or self.config.default_width
        f, p = vae.spatial_compression, self.transformer.config.patch_size
        if height % (f * p) or width % (f * p):
            raise ValueError(
                f"height and width must be multiples of {f * p} (VAE factor {f} x patch {p}), got {height}x{width}"
            )
        self._guidance_scale, self._interrupt = guidance_scale, False
        device = self._execution_device

        prompt_embeds, prompt_mask, negative_prompt_embeds, negative_mask = self.encode_prompt(
            prompt,
            negative_prompt,
            num_videos_per_prompt,
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
            max_sequence_length,
            device,
        )
        shape = (
            prompt_embeds.shape[0],
            self.transformer.config.in_channels,
            latent_frames(num_frames, vae.temporal_compression),
            height // f,
            width // f,
        )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents of shape {tuple(latents.shape)}, expected {shape} for these prompts and sizes")
        # latents stay in fp32 whatever the model computes in: many small Euler steps add up
        latents = latents.to(device=device, dtype=torch.float32)

        iddpm = isinstance(self.scheduler, DDPMScheduler)
        num_inference_steps = num_inference_steps or (IDDPM_STEPS if iddpm else FLOW_STEPS)
        if iddpm:
            steps = respaced_timesteps(self.scheduler.config.num_train_timesteps, num_inference_steps)
            self.scheduler.set_timesteps(timesteps=steps, device=device)
            if negative_prompt_embeds is None:
                under = self.config.null_caption_mask == "prompt"
                negative_prompt_embeds, negative_mask = null_caption(self.transformer.y_embedding, prompt_mask, under)
        else:
            sigmas = sampling_sigmas(self.flow_config(), shape, num_inference_steps)
            self.scheduler.set_timesteps(sigmas=sigmas, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                guided = (prompt_embeds, prompt_mask, self.guidance_scale, negative_prompt_embeds, negative_mask)
                if iddpm:  # noise and variance; the variance's noise drawn from the caller's generator
                    out = guided_output(self.transformer, latents, t, *guided, self.config.guidance_channels)
                    latents = self.scheduler.step(out, t, latents, generator=generator, return_dict=False)[0]
                else:
                    v = guided_velocity(self.transformer, latents, t, *guided)
                    latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    named = {"latents": latents, "prompt_embeds": prompt_embeds}
                    named["negative_prompt_embeds"] = negative_prompt_embeds
                    seen = {k: named[k] for k in callback_on_step_end_tensor_inputs}
                    replaced = callback_on_step_end(self, i, t, seen) or {}
                    latents = replaced.pop("latents", latents)
                    prompt_embeds = replaced.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = replaced.pop("negative_prompt_embeds", negative_prompt_embeds)
                progress.update()

        if output_type == "latent":
            frames = latents
        else:  # one video at a time: the decoder's memory does not grow with the batch
            video = torch.cat([vae.decode(z[None]) for z in latents])
            frames = self.video_processor.postprocess_video(video.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        return T2VPipelineOutput(frames=frames) if return_dict else (frames,)


def assemble_pipeline(
    transformer: STDiT,
    vae_spec: str,
    text_encoder_spec: str,
    max_text_tokens: int,
    flow: FlowConfig | None = None,
    sample_shape: tuple[int, int, int] = (16, 256, 256),
    load_encoders: bool = True,
) -> T2VPipeline:
    """A pipeline around a trained transformer; `flow` as trained, `sample_shape` (frames, height, width) the
    default output. Without `load_encoders` the encoders stay references: a pipeline to save, not to call."""
    flow = flow or FlowConfig()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=flow.num_train_timesteps, shift=1.0)
    frames, height, width = sample_shape
    return T2VPipeline(
        transformer,
        scheduler,
        vae_spec=vae_spec,
        text_encoder_spec=text_encoder_spec,
        max_text_tokens=max_text_tokens,
        flow=asdict(flow),
        default_num_frames=frames,
        default_height=height,
        default_width=width,
        # a model of Open-Sora 1.0's block trained on here drops captions as 1.0 does: sampled the same way
        null_caption_mask="prompt" if transformer.config.temporal_branch == "opensora-v1" else "full",
        load_encoders=load_encoders,
    )
