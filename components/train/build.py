"""The model to train: from scratch, from PixArt, or the previous stage's export; how it runs fast (fused projections,
the blocks that recompute, regional compilation); and its EMA copy."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from components.train.config import CHECKPOINT_FILES, TrainConfig
from model.networks.presets import preset_config
from model.networks.stdit import STDiT

log = logging.getLogger(__name__)


def build_model(cfg: TrainConfig, meta: dict, latent_side: int) -> STDiT:
    """The STDiT that model.init names ('scratch': the preset sized to the data, 'pixart:<id>', or an export
    folder), checked against the data's latent channels."""
    init = cfg.model.init
    if init.startswith("pixart:"):
        from model.weights.pixart import stdit_from_pixart

        model = stdit_from_pixart(init.split(":", 1)[1], **cfg.model.overrides)
    elif init.endswith(CHECKPOINT_FILES):
        from model.weights.hub import resolve
        from model.weights.opensora import stdit_from_opensora_v1

        model = stdit_from_opensora_v1(resolve(init), num_heads=cfg.model.overrides.get("num_attention_heads"))
    elif init != "scratch":
        folder, subfolder = init_folder(init, cfg.tracking_uri)
        model = STDiT.from_pretrained(folder, subfolder=subfolder)
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


def init_folder(init: str, tracking_uri: str | None = None) -> tuple[Path, str | None]:
    """(folder, subfolder) of the STDiT that model.init names: an export folder, a pipeline folder or a models:/
    URI (downloaded once into the registry cache)."""
    from components.common.registry import is_registry_uri, pipeline_folder

    folder = pipeline_folder(init, tracking_uri)[0] if is_registry_uri(init) else Path(init)
    if (folder / "config.json").exists():
        return folder, None
    if (folder / "transformer" / "config.json").exists():
        return folder, "transformer"
    raise ValueError(f"model.init={init!r}: not 'scratch', 'pixart:<id>', an STDiT export or pipeline folder, a "
                     "models:/ URI or an Open-Sora 1.0 checkpoint file (.pth, .safetensors)")  # fmt: skip


def init_lineage(init: str, tracking_uri: str | None = None) -> list[dict]:
    """Where model.init's weights come from: the lineage its folder holds (an export, an import, a registered
    version), or for a checkpoint file its source and sha256; [] for scratch and PixArt."""
    if init == "scratch" or init.startswith("pixart:"):
        return []
    if init.endswith(CHECKPOINT_FILES):
        from model.inference.imports import FORMAT
        from model.weights.hub import file_sha256, resolve

        path = Path(resolve(init))
        return [{"imported_from": init, "format": FORMAT, "checkpoint_sha256": file_sha256(path), "training_runs": []}]
    lineage = init_folder(init, tracking_uri)[0] / "lineage.json"
    return json.loads(lineage.read_text()) if lineage.exists() else []


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
