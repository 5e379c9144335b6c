"""Losses that measure a model rather than train it: the validation loss on held-out samples and the probe loss on
one fixed batch. Fixed timesteps and fixed noise make both comparable across steps, runs and stages; training
logs them and evaluation reports them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from diffusers import DDPMScheduler

from components.common.latents import LatentDataset, collate
from model.networks.stdit import STDiT
from model.schedulers.flow import flow_loss
from model.schedulers.iddpm import epsilon_loss

FLOW, IDDPM = "rectified-flow", "iddpm-epsilon"  # the objectives a model can have been trained with


def objective(scheduler, num_train_timesteps: int = 1000) -> tuple[str, Callable[..., torch.Tensor]]:
    """The objective a pipeline's model was trained with, read from the scheduler it samples with, and its
    per-sample loss: IDDPM's noise MSE for a DDPMScheduler (Open-Sora 1.0's weights), rectified flow's otherwise.
    Losses under different objectives measure different things and are never compared."""
    if isinstance(scheduler, DDPMScheduler):
        return IDDPM, partial(epsilon_loss, scheduler=scheduler)
    return FLOW, partial(flow_loss, num_train_timesteps=num_train_timesteps)


@torch.no_grad()
def validation_loss(
    model: STDiT,
    val: LatentDataset,
    device: str,
    *,
    timesteps: int = 10,
    max_samples: int = 256,
    seed: int = 0,
    num_train_timesteps: int = 1000,
    loss: Callable[..., torch.Tensor] | None = None,
) -> dict[str, float]:
    """The training objective's loss at `timesteps` evenly spaced timesteps in (0, 1) with fixed noise per sample
    (Open-Sora 1.2's validation), averaged per bucket (`val_loss/<bucket>`) and over all samples (`val_loss`).
    `loss(model, x0, noise, t, text, mask)` gives per-sample losses; default: rectified flow's (`flow_loss`)."""
    if len(val) == 0:
        return {}
    was_training = model.training
    model.eval()
    ts = (torch.arange(timesteps) + 0.5) / timesteps
    loss = loss or partial(flow_loss, num_train_timesteps=num_train_timesteps)
    per_bucket: dict[str, list[float]] = {}
    for i in range(min(len(val), max_samples)):
        sample = val[i]
        batch = collate([sample])
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        x0 = batch["latent"].to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        text, mask = batch["text"].to(device), batch["text_mask"].to(device)
        losses = [loss(model, x0, noise, t.view(1).to(device), text, mask) for t in ts]
        per_bucket.setdefault(sample["bucket"], []).append(float(torch.cat(losses).mean()))
    model.train(was_training)
    out = {f"val_loss/{b}": float(np.mean(v)) for b, v in per_bucket.items()}
    out["val_loss"] = float(np.mean([x for v in per_bucket.values() for x in v]))
    return out


@torch.no_grad()
def probe_loss(model: STDiT, batch: dict, device: str, *, seed: int = 0, num_train_timesteps: int = 1000) -> float:
    """Loss on a fixed batch at fixed timesteps and noise: comparable across steps, runs and stages."""
    was_training = model.training
    model.eval()
    x0 = batch["latent"].to(device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    text, mask = batch["text"].to(device), batch["text_mask"].to(device)
    n = num_train_timesteps
    losses = [
        flow_loss(model, x0, noise, torch.full((x0.shape[0],), t, device=device), text, mask, num_train_timesteps=n)
        for t in (0.25, 0.5, 0.75)
    ]
    model.train(was_training)
    return float(torch.cat(losses).mean())
