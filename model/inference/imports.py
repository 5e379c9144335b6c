"""Pipeline folders around imported weights: Open-Sora 1.0's released checkpoints as T2VPipeline folders that sample
as the weights were trained (IDDPM, guidance on three latent channels, the null caption under the prompt's mask),
and back to a 1.0 checkpoint file.

    t2v model import opensora-v1 hpcai-tech/Open-Sora/OpenSora-v1-HQ-16x512x512.pth --out models/opensora-v1-512
    t2v generate --model models/opensora-v1-512 --prompt "a red panda eating bamboo"
    t2v model export opensora-v1 models/opensora-v1-512 --out OpenSora-v1-HQ-16x512x512.pth
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model.inference.pipeline import T2VPipeline
from model.networks.stdit import STDiT
from model.schedulers.iddpm import GUIDED_CHANNELS, iddpm_scheduler
from model.weights.hub import file_sha256, resolve
from model.weights.opensora import RELEASES, stdit_from_opensora_v1, to_opensora_v1_state_dict

# what every 1.0 release was trained with
VAE = "stabilityai/sd-vae-ft-ema"
TEXT_ENCODER = "DeepFloyd/t5-v1_1-xxl"
TEXT_TOKENS = 120
FORMAT = "opensora-v1"


def opensora_v1_pipeline(
    transformer: STDiT,
    *,
    frames: int = 16,
    vae: str = VAE,
    text_encoder: str = TEXT_ENCODER,
    load_encoders: bool = False,
) -> T2VPipeline:
    """A pipeline around a model with Open-Sora 1.0's temporal branch, sampling as 1.0 did: 100 IDDPM steps by
    default, guidance on the first three latent channels, the null caption under the prompt's mask, prompts in
    lower case."""
    pixels = transformer.config.sample_size * 8
    return T2VPipeline(
        transformer,
        iddpm_scheduler(),
        vae_spec=vae,
        text_encoder_spec=text_encoder,
        max_text_tokens=transformer.config.caption_max_length,
        default_num_frames=frames,
        default_height=pixels,
        default_width=pixels,
        guidance_channels=GUIDED_CHANNELS,
        null_caption_mask="prompt",
        lowercase_prompts=True,
        load_encoders=load_encoders,
    )


def import_opensora_v1(
    source: str,
    out: str | Path,
    *,
    pixels: int | None = None,
    num_heads: int | None = None,
    vae: str = VAE,
    text_encoder: str = TEXT_ENCODER,
) -> Path:
    """Write the pipeline folder of a 1.0 checkpoint (`source`: a path or a hub file, ORG/NAME/FILE) to `out`, its
    lineage naming the file and its sha256; returns `out`."""
    path = Path(resolve(source))
    name = Path(source).name
    transformer = stdit_from_opensora_v1(path, pixels=pixels or RELEASES.get(name, (256, 16))[0], num_heads=num_heads)
    frames = RELEASES.get(name, (256, 16))[1]
    pipe = opensora_v1_pipeline(transformer, frames=frames, vae=vae, text_encoder=text_encoder)
    out = Path(out)
    pipe.save_pretrained(out)
    record = {
        "imported_from": source,
        "format": FORMAT,
        "checkpoint_sha256": file_sha256(path),
        "pixels": transformer.config.sample_size * 8,
        "frames": frames,
        "training_runs": [],  # trained elsewhere: no run of this product made these weights
    }
    (out / "lineage.json").write_text(json.dumps([record], indent=2))
    return out


def export_opensora_v1(folder: str | Path, out: str | Path) -> Path:
    """A pipeline or transformer folder whose model has Open-Sora 1.0's temporal branch, written as a 1.0
    checkpoint file (`torch.save` of the weights, what Open-Sora's loader reads); returns `out`."""
    folder = Path(folder)
    subfolder = "transformer" if (folder / "transformer" / "config.json").is_file() else None
    model = STDiT.from_pretrained(folder, subfolder=subfolder)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_opensora_v1_state_dict(model), out)
    return out
