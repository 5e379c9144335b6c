"""The sampler Open-Sora 1.0's weights were trained for: improved DDPM (IDDPM) as a diffusers DDPMScheduler.

1000 training steps on DDPM's linear betas (1e-4 to 0.02); the model predicts the noise (epsilon) in its first C
output channels and, in the other C, where the variance lies between the posterior's and beta's (log space,
"learned range"); sampling respaces the 1000 steps evenly to 100 (IDDPM's `space_timesteps`: the first and the last
step included, the ones between rounded). Classifier-free guidance at 7.0 contrasts the caption with the learned
null caption, which Open-Sora 1.0 reads under the prompt's own token mask, and guides only the first three latent
channels: the fourth and the variance take the conditional branch's values.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

GUIDED_CHANNELS = 3  # Open-Sora 1.0's sampler guides the first three latent channels only


def iddpm_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """DDPMScheduler configured as IDDPM: linear betas, epsilon prediction, learned-range variance, no clipping
    (latents are not confined to [-1, 1])."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        variance_type="learned_range",
        prediction_type="epsilon",
        clip_sample=False,
    )


def respaced_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """IDDPM's respacing of `num_train_timesteps` into `num_steps` evenly spread ones, first and last included,
    from the noisiest down (what DDPMScheduler.set_timesteps takes as custom timesteps)."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps={num_steps} must be between 1 and {num_train_timesteps}")
    stride = (num_train_timesteps - 1) / (num_steps - 1) if num_steps > 1 else 1.0
    taken, position = set(), 0.0
    for _ in range(num_steps):  # accumulated, as IDDPM does
        taken.add(round(position))
        position += stride
    return sorted(taken, reverse=True)


def guided_output(
    model: torch.nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    guidance_scale: float,
    negative_text: torch.Tensor,
    negative_mask: torch.Tensor,
    channels: int | None = GUIDED_CHANNELS,
) -> torch.Tensor:
    """The model's whole output (fp32, noise then variance channels) at latents x (B, C, T, H, W) and timestep t,
    with classifier-free guidance on its first `channels` noise channels (None: all C): eps = uncond + s * (cond -
    uncond) there, the conditional branch's values everywhere else."""
    B, C = x.shape[:2]
    if guidance_scale == 1.0:
        return model(x, t.expand(B), text, text_mask).sample.float()
    length = max(text.shape[1], negative_text.shape[1])
    pad = [(length - a.shape[1]) for a in (text, negative_text)]
    text_in = torch.cat([torch.nn.functional.pad(text, (0, 0, 0, pad[0])),
                         torch.nn.functional.pad(negative_text.to(text.dtype), (0, 0, 0, pad[1]))])  # fmt: skip
    mask_in = torch.cat([torch.nn.functional.pad(text_mask, (0, pad[0])),
                         torch.nn.functional.pad(negative_mask, (0, pad[1]))])  # fmt: skip
    out = model(torch.cat([x, x]), t.expand(2 * B), text_in, mask_in).sample.float()
    cond, uncond = out.chunk(2)
    k = C if channels is None else channels
    guided = cond.clone()
    guided[:, :k] = uncond[:, :k] + guidance_scale * (cond[:, :k] - uncond[:, :k])
    return guided


def null_caption(
    null: torch.Tensor, prompt_mask: torch.Tensor, under_prompt_mask: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The learned null caption `null` (N, Ccap), one per prompt row, and its mask: whole, or under each prompt's own
    token mask padded to N (as Open-Sora 1.0's sampler reads it)."""
    rows, length = prompt_mask.shape[0], null.shape[0]
    if under_prompt_mask:
        mask = torch.nn.functional.pad(prompt_mask.bool(), (0, length - prompt_mask.shape[1]))
    else:
        mask = torch.ones(rows, length, dtype=torch.bool, device=prompt_mask.device)
    return null[None].expand(rows, -1, -1), mask


def epsilon_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor | None,
    *,
    scheduler: DDPMScheduler,
) -> torch.Tensor:
    """Per-sample IDDPM "simple" loss (B,), what an IDDPM-trained model is measured by: MSE between the predicted
    noise (the first C output channels) and the true noise, at `t` in (0, 1) taken as training step floor(t * T)
    and x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    steps = scheduler.config.num_train_timesteps
    index = (t.float() * steps).long().clamp(0, steps - 1)
    abar = scheduler.alphas_cumprod.to(x0.device)[index].view(-1, *([1] * (x0.ndim - 1)))
    x_t = (abar.sqrt() * x0.float() + (1 - abar).sqrt() * noise.float()).to(x0.dtype)
    pred = model(x_t, index.to(x0.dtype), text, text_mask).sample[:, : x0.shape[1]]
    return (pred.float() - noise.float()).pow(2).flatten(1).mean(1)
