"""Sample videos during training: generated from held-out captions, decoded with the VAE, written as mp4."""

from __future__ import annotations

from pathlib import Path

import torch

from components.common.latents import LatentDataset, collate
from components.train.config import TrainConfig
from model.inference.pipeline import to_frames
from model.networks.stdit import STDiT


@torch.no_grad()
def sample_videos(model: STDiT, prompts: LatentDataset, vae, cfg: TrainConfig, folder: Path, device: str) -> list[Path]:
    """Generate from the first `sample_count` held-out captions (their latent shapes), decode, write mp4s."""
    from components.common.video import write_video
    from model.schedulers.flow import sample

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(min(cfg.sample_count, len(prompts))):
        item = collate([prompts[i]])
        latents = sample(
            model,
            tuple(item["latent"].shape),
            item["text"].to(device),
            item["text_mask"].to(device),
            cfg=cfg.flow,
            num_steps=cfg.sample_steps,
            guidance_scale=cfg.guidance_scale,
            generator=torch.Generator().manual_seed(cfg.seed + i),
        )
        frames = to_frames(vae.decode(latents.float().cpu())[0])
        path = folder / f"sample_{i}.mp4"
        write_video(path, list(frames), fps=8)
        written.append(path)
    model.train()
    return written
