"""The model to train: from scratch, from PixArt, or the previous stage's export; how it runs fast (fused projections,
the blocks that recompute, regional compilation); and its EMA copy."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from components.train.config import TrainConfig
from model.networks.stdit import STDiT, preset_config

log = logging.getLogger(__name__)


def build_model(cfg: TrainConfig, meta: dict, latent_side: int) -> STDiT:
    """The STDiT that model.init names ('scratch': the preset sized to the data, 'pixart:<id>', or an export
    folder), checked against the data's latent channels."""
    init = cfg.model.init
    if init.startswith("pixart:"):
        from model.weights.pixart import stdit_from_pixart

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
    if cfg.model.on("fused_projections"):
        model.fuse_projections()
    return model


def device_memory_gb(device: str) -> float:
    """What one process may hold: the GPU's memory, or on the CPU the machine's memory shared by its processes."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(device).total_memory / 2**30
    import os

    import psutil

    return psutil.virtual_memory().total / 2**30 / max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def set_recompute(
    model: STDiT, cfg: TrainConfig, shapes: list[dict], text_tokens: int, device: str, plugin: str, dp: int
) -> int:
    """Apply model.gradient_checkpointing: every block (true), none (false), the first N, or (auto) the fewest the
    memory model says the largest of `shapes` ({batch, frames, height, width}: per-process batch and latent size of
    each bucket) needs in this device's memory (after `set_compile`: compiled blocks keep less). Returns the number
    of blocks that recompute."""
    from model.planning.flops import Arch
    from model.planning.memory import StepSetup, recompute_blocks

    setting, layers = cfg.model.gradient_checkpointing, model.config.num_layers
    if setting == "auto":
        setup = StepSetup(plugin=plugin, dp=dp, ema=True, compiled=model.compiled is not None)
        gb = device_memory_gb(device)
        count = recompute_blocks(
            Arch.from_config(model.config), shapes, text_tokens=text_tokens, setup=setup, gpu_gb=gb
        )
        log.info("gradient checkpointing auto: %d of %d blocks recompute (%.0f GB per process)", count, layers, gb)
    else:
        count = layers if setting is True else 0 if setting is False else min(int(setting), layers)
    if count:
        model.enable_gradient_checkpointing()
        model.recompute_blocks = count
    else:
        model.disable_gradient_checkpointing()
        model.recompute_blocks = None
    return count


def set_compile(model: STDiT, cfg: TrainConfig) -> bool:
    """Compile the blocks when model.compile says so (auto: on CUDA); whether it did."""
    on = cfg.model.on("compile")
    if on:
        model.compile_blocks()
    return on


def export_stage(init: str) -> int | None:
    """The stage that trained the export folder `init`, None when it is not one."""
    state = Path(init) / "train_state.json"
    return json.loads(state.read_text()).get("stage") if state.exists() else None


def ema_copy(model: STDiT, device: str) -> STDiT:
    """A frozen float32 copy of the model, the start of its exponential moving average."""
    ema = STDiT.from_config(model.config).to(device).eval().requires_grad_(False)
    if model.projections_fused:  # the same parameters in the same order as the model's (update_ema pairs them)
        ema.fuse_projections()
    ema.load_state_dict(model.state_dict())
    ema.float()
    return ema


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model, parameter by parameter."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.mul_(decay).add_(p.detach().float(), alpha=1 - decay)
