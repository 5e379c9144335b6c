"""Rectified flow: the training objective and Euler sampling with classifier-free guidance.

Convention (diffusers' FlowMatchEulerDiscreteScheduler): x_t = (1 - t) * x0 + t * noise, t in [0, 1], t = 1 is pure
noise; the model predicts the velocity dx_t/dt = noise - x0 and sees the timestep as t * num_train_timesteps.

Training timesteps are logit-normal and shifted towards noise for larger inputs (SD3 / Open-Sora 1.2):
t' = r * t / (1 + (r - 1) * t), r = sqrt(pixels / base_pixels) * sqrt(latent_frames / base_frames).

All randomness of a training sample (its noise, its timestep, whether its caption is dropped) can be drawn from
(seed, step, global sample index) alone, so a result does not depend on how a batch is split across processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from tqdm.auto import tqdm

from model.schedulers.config import FlowConfig


def timestep_shift_factor(cfg: FlowConfig, latent_shape: tuple[int, ...]) -> float:
    """Shift r for latents shaped (..., T, H, W); `cfg.shift` when set; 1.0 when the shift is off."""
    if cfg.shift is not None:
        return cfg.shift
    if not cfg.resolution_shift:
        return 1.0
    T, H, W = latent_shape[-3:]
    pixels = H * W * cfg.spatial_compression**2
    return math.sqrt(pixels / cfg.base_pixels) * math.sqrt(T / cfg.base_latent_frames)


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * t / (1 + (shift - 1) * t)


def sample_seed(seed: int, step: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, step, sample index)."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(2, dtype=np.uint64)[0] >> 1)


@dataclass
class FlowDraw:
    noise: torch.Tensor  # (B, C, T, H, W)
    t: torch.Tensor  # (B,) in (0, 1), shifted
    drop_caption: torch.Tensor  # (B,) bool


def draw(
    cfg: FlowConfig,
    sample_shape: tuple[int, ...],
    *,
    seed: int,
    step: int,
    indices: list[int] | torch.Tensor,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> FlowDraw:
    """Noise, timestep and caption dropout for each sample, each from its own (seed, step, index) generator."""
    noise, logits, u, flat = [], [], [], []
    for index in [int(i) for i in indices]:
        g = torch.Generator().manual_seed(sample_seed(seed, step, index))
        noise.append(torch.randn(sample_shape, generator=g))
        logits.append(torch.randn((), generator=g))
        u.append(torch.rand((), generator=g))
        if cfg.uniform_share > 0:  # drawn last: without a uniform share every other draw stays as it was
            flat.append(torch.rand(2, generator=g))
    t = torch.sigmoid(torch.stack(logits) * cfg.logit_std + cfg.logit_mean)
    t = shift_timesteps(t, timestep_shift_factor(cfg, sample_shape))
    if flat:
        pick, level = torch.stack(flat).unbind(1)
        t = torch.where(pick < cfg.uniform_share, level.clamp(1e-4, 1 - 1e-4), t)
    return FlowDraw(
        noise=torch.stack(noise).to(device=device, dtype=dtype),
        t=t.to(device),
        drop_caption=(torch.stack(u) < cfg.caption_dropout).to(device),
    )


def flow_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor | None = None,
    drop_caption: torch.Tensor | None = None,
    *,
    num_train_timesteps: int = 1000,
) -> torch.Tensor:
    """Per-sample rectified-flow loss (B,): MSE between predicted and true velocity at timesteps `t` (B,)."""
    t_ = t.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    x_t = (1 - t_) * x0 + t_ * noise
    pred = model(x_t, t * num_train_timesteps, text, text_mask, drop_caption).sample
    pred = pred[:, : x0.shape[1]]  # a learned-sigma model has 2C outputs; the velocity is the first half
    return (pred.float() - (noise - x0).float()).pow(2).flatten(1).mean(1)


def training_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor | None,
    cfg: FlowConfig,
    *,
    seed: int,
    step: int,
    indices: list[int] | torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Training loss of a batch whose samples have global indices `indices` at optimizer step `step`: the mean over
    the batch, or (`reduction="sum"`) the sum, for a caller that divides by a global batch size."""
    d = draw(cfg, tuple(x0.shape[1:]), seed=seed, step=step, indices=indices, dtype=x0.dtype, device=x0.device)
    loss = flow_loss(
        model, x0, d.noise, d.t, text, text_mask, d.drop_caption, num_train_timesteps=cfg.num_train_timesteps
    )
    return loss.sum() if reduction == "sum" else loss.mean()


def make_scheduler(cfg: FlowConfig) -> FlowMatchEulerDiscreteScheduler:
    # shift=1: the resolution-aware shift is applied to the sigmas we pass, per call.
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=cfg.num_train_timesteps, shift=1.0)


def sampling_sigmas(cfg: FlowConfig, shape: tuple[int, ...], num_steps: int) -> list[float]:
    """The noise levels of `num_steps` Euler steps from pure noise, shifted for latents of `shape` (..., T, H, W)."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be at least 1")
    return shift_timesteps(torch.linspace(1.0, 1.0 / num_steps, num_steps), timestep_shift_factor(cfg, shape)).tolist()


def _pad_tokens(text: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Text tokens (B, L, C) and their mask (B, L) padded to `length` tokens; the padding is masked out."""
    pad = length - text.shape[1]
    return torch.nn.functional.pad(text, (0, 0, 0, pad)), torch.nn.functional.pad(mask, (0, pad))


def guided_velocity(
    model: torch.nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor | None,
    guidance_scale: float,
    negative_text: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The velocity (fp32) at latents x (B, C, T, H, W) and timestep t, with classifier-free guidance unless
    guidance_scale is 1: v = v_uncond + s * (v_cond - v_uncond), both halves in one batch. The unconditional input is
    the negative text when given, else the model's learned null caption."""
    B, C = x.shape[:2]
    if guidance_scale == 1.0:
        return model(x, t.expand(B), text, text_mask).sample[:, :C].float()
    if text_mask is None:
        text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    if negative_text is None:
        text_in, mask_in = torch.cat([text, text]), torch.cat([text_mask, text_mask])
        drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)]).to(x.device)
    else:
        if negative_mask is None:
            negative_mask = torch.ones(negative_text.shape[:2], dtype=torch.bool, device=negative_text.device)
        length = max(text.shape[1], negative_text.shape[1])
        cond, uncond = (
            _pad_tokens(text, text_mask, length),
            _pad_tokens(negative_text.to(text.dtype), negative_mask, length),
        )
        text_in, mask_in, drop = torch.cat([cond[0], uncond[0]]), torch.cat([cond[1], uncond[1]]), None
    v = model(torch.cat([x, x]), t.expand(2 * B), text_in, mask_in, drop).sample[:, :C].float()
    v_cond, v_uncond = v.chunk(2)
    return v_uncond + guidance_scale * (v_cond - v_uncond)


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    shape: tuple[int, ...],
    text: torch.Tensor,
    text_mask: torch.Tensor | None = None,
    *,
    cfg: FlowConfig = FlowConfig(),
    num_steps: int = 30,
    guidance_scale: float = 7.0,
    generator: torch.Generator | None = None,
    scheduler: FlowMatchEulerDiscreteScheduler | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Generate latents of `shape` (B, C, T, H, W), in the model's dtype, from noise by Euler steps on the predicted
    velocity, with classifier-free guidance against the null caption (`guided_velocity`)."""
    param = next(model.parameters())
    scheduler = scheduler or make_scheduler(cfg)
    scheduler.set_timesteps(sigmas=sampling_sigmas(cfg, shape, num_steps), device=param.device)
    x = torch.randn(shape, generator=generator).to(device=param.device, dtype=param.dtype)
    text = text.to(device=param.device, dtype=param.dtype)
    if text_mask is not None:
        text_mask = text_mask.to(param.device)
    for t in tqdm(scheduler.timesteps, desc="sampling", disable=not progress, leave=False):
        v = guided_velocity(model, x, t, text, text_mask, guidance_scale)
        x = scheduler.step(v.to(x.dtype), t, x).prev_sample
    return x
