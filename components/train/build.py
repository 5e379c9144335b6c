"""The model to train: from scratch, from PixArt, or the previous stage's export; and its EMA copy."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from components.train.config import TrainConfig
from model.stdit import STDiT, preset_config


def build_model(cfg: TrainConfig, meta: dict, latent_side: int) -> STDiT:
    """The STDiT that model.init names ('scratch': the preset sized to the data, 'pixart:<id>', or an export
    folder), checked against the data's latent channels."""
    init = cfg.model.init
    if init.startswith("pixart:"):
        from model.pixart_import import stdit_from_pixart

        model = stdit_from_pixart(init.split(":", 1)[1], **cfg.model.overrides)
    elif init != "scratch":
        if not (Path(init) / "config.json").exists():
            raise ValueError(f"model.init={init!r}: not 'scratch', 'pixart:<id>' or an STDiT export folder")
        model = STDiT.from_pretrained(init)
    else:
        config = preset_config(
            cfg.model.preset,
            in_channels=meta["latent_channels"],
            caption_channels=meta["encoders"]["text_channels"],
            caption_max_length=meta["encoders"]["max_text_tokens"],
            sample_size=latent_side,
        )
        model = STDiT(**{**config, **cfg.model.overrides})
    if model.config.in_channels != meta["latent_channels"]:
        raise ValueError(
            f"model takes {model.config.in_channels} latent channels, the data has {meta['latent_channels']}; "
            "precompute with the VAE the model was trained on"
        )
    if cfg.stage == 2 and export_stage(init) == 1:
        model.zero_temporal_output()  # video training starts as the image model applied frame by frame
    if cfg.model.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model


def export_stage(init: str) -> int | None:
    """The stage that trained the export folder `init`, None when it is not one."""
    state = Path(init) / "train_state.json"
    return json.loads(state.read_text()).get("stage") if state.exists() else None


def ema_copy(model: STDiT, device: str) -> STDiT:
    """A frozen float32 copy of the model, the start of its exponential moving average."""
    ema = STDiT.from_config(model.config).to(device).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    ema.float()
    return ema


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model, parameter by parameter."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.mul_(decay).add_(p.detach().float(), alpha=1 - decay)
