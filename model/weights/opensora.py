"""Open-Sora 1.0's released STDiT checkpoints in and out (hpcai-tech/Open-Sora: `OpenSora-v1-16x256x256.pth`,
`OpenSora-v1-HQ-16x256x256.pth`, `OpenSora-v1-HQ-16x512x512.pth`).

Their network is STDiT with `temporal_branch="opensora-v1"`: the temporal attention runs on the residual stream
itself (no norm, no modulation) under the spatial branch's gate, a 1D sin-cos frame embedding is added to its input
in the first block only, and the 2D sin-cos position embedding is laid out at `space_scale` (0.5 at 256 px, 1.0 at
512 px). Every key of the 1.0 layout maps onto one of STDiT's (fused q/k/v and k/v rows split, the patch
embedding's time kernel of 1 dropped) and back: `to_stdit_state_dict` and `to_opensora_v1_state_dict` are inverse,
bit for bit. The fixed sin-cos buffers some files carry (`pos_embed`, `pos_embed_temporal`) are recomputed.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from model.networks.stdit import STDiT

HUB_REPO = "hpcai-tech/Open-Sora"
RELEASES = {  # file -> (pixels, frames): what each released checkpoint was trained at
    "OpenSora-v1-16x256x256.pth": (256, 16),
    "OpenSora-v1-HQ-16x256x256.pth": (256, 16),
    "OpenSora-v1-HQ-16x512x512.pth": (512, 16),
}
BUFFERS = ("pos_embed", "pos_embed_temporal")  # fixed sin-cos tables: recomputed from the config
VAE_FACTOR = 8  # stabilityai/sd-vae-ft-ema, the VAE every release was trained with

# (theirs, ours, how many row blocks the tensor splits into): per block, then for the whole model
BLOCK_KEYS = (
    ("scale_shift_table", ("scale_shift_table",)),
    ("attn.qkv", ("attn1.to_q", "attn1.to_k", "attn1.to_v")),
    ("attn.proj", ("attn1.to_out.0",)),
    ("attn_temp.qkv", ("attn_temp.to_q", "attn_temp.to_k", "attn_temp.to_v")),
    ("attn_temp.proj", ("attn_temp.to_out.0",)),
    ("cross_attn.q_linear", ("attn2.to_q",)),
    ("cross_attn.kv_linear", ("attn2.to_k", "attn2.to_v")),
    ("cross_attn.proj", ("attn2.to_out.0",)),
    ("mlp.fc1", ("ff.net.0.proj",)),
    ("mlp.fc2", ("ff.net.2",)),
)
MODEL_KEYS = (
    ("x_embedder.proj", ("pos_embed.proj",)),
    ("t_embedder.mlp.0", ("adaln_single.emb.timestep_embedder.linear_1",)),
    ("t_embedder.mlp.2", ("adaln_single.emb.timestep_embedder.linear_2",)),
    ("t_block.1", ("adaln_single.linear",)),
    ("y_embedder.y_proj.fc1", ("caption_projection.linear_1",)),
    ("y_embedder.y_proj.fc2", ("caption_projection.linear_2",)),
    ("y_embedder.y_embedding", ("y_embedding",)),
    ("final_layer.scale_shift_table", ("scale_shift_table",)),
    ("final_layer.linear", ("proj_out",)),
)
PARAMETERS = ("scale_shift_table", "y_embedding")  # tensors of their own; every other name is a layer (weight, bias)


def key_pairs(num_layers: int) -> list[tuple[str, tuple[str, ...]]]:
    """(their tensor, our tensors it splits into) for every tensor of a 1.0 checkpoint of `num_layers` blocks."""
    pairs = []
    groups = [("", MODEL_KEYS)] + [(f"blocks.{i}.", BLOCK_KEYS) for i in range(num_layers)]
    for prefix, table in groups:
        ours_prefix = prefix.replace("blocks.", "transformer_blocks.")
        for theirs, ours in table:
            tail = ("",) if theirs.split(".")[-1] in PARAMETERS else (".weight", ".bias")
            for t in tail:
                pairs.append((f"{prefix}{theirs}{t}", tuple(f"{ours_prefix}{o}{t}" for o in ours)))
    return pairs


def unwrap(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The weights of a loaded 1.0 checkpoint: the dict itself, or the one under `ema` or `state_dict`; without
    the fixed sin-cos buffers and a `module.` prefix."""
    for key in ("ema", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    weights = {k.removeprefix("module."): v for k, v in checkpoint.items() if torch.is_tensor(v)}
    return {k: v for k, v in weights.items() if k not in BUFFERS}


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A 1.0 checkpoint file (.pth read with weights_only=True, or .safetensors), unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Open-Sora checkpoint {path} not found; download one with `hf download {HUB_REPO} "
                         f"{next(iter(RELEASES))} --local-dir .`")  # fmt: skip
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return unwrap(load_file(path))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a checkpoint of tensors that loads with weights_only=True ({err})") from err
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(loaded).__name__}")
    return unwrap(loaded)


def config_from_checkpoint(
    weights: dict[str, torch.Tensor], *, pixels: int = 256, num_heads: int | None = None
) -> dict:
    """STDiT constructor arguments for a 1.0 checkpoint, its sizes read from the tensors' shapes; `pixels` (the
    resolution it was trained at) sets the position embedding's layout: space_scale = pixels / 512. The heads cannot
    be read from the shapes: 16 of 72 channels for the released width of 1152, else give `num_heads`."""
    need = ("x_embedder.proj.weight", "y_embedder.y_embedding", "final_layer.linear.weight", "blocks.0.mlp.fc1.weight")
    if missing := [k for k in need if k not in weights]:
        raise ValueError(f"not an Open-Sora 1.0 STDiT checkpoint: no {missing}; its keys begin {sorted(weights)[:5]}")
    width, in_channels, _, patch, _ = weights["x_embedder.proj.weight"].shape
    layers = 1 + max(int(m[1]) for k in weights if (m := re.match(r"blocks\.(\d+)\.", k)))
    heads = num_heads or (16 if width == 1152 else None)
    if heads is None or width % heads:
        raise ValueError(f"a 1.0 checkpoint of width {width}: give num_heads (a divisor of {width})")
    latent = pixels // VAE_FACTOR
    return {
        "in_channels": in_channels,
        "out_channels": weights["final_layer.linear.weight"].shape[0] // patch**2,
        "patch_size": patch,
        "num_layers": layers,
        "num_attention_heads": heads,
        "attention_head_dim": width // heads,
        "caption_channels": weights["y_embedder.y_embedding"].shape[1],
        "caption_max_length": weights["y_embedder.y_embedding"].shape[0],
        "sample_size": latent,
        "interpolation_scale": pixels / 512,  # Open-Sora 1.0's space_scale
        "mlp_ratio": weights["blocks.0.mlp.fc1.weight"].shape[0] / width,
        "attention_mode": "spatial_temporal",
        "temporal_branch": "opensora-v1",
        "temporal_position": "sincos",
        "time_scale": 1.0,
        "qk_norm": False,
        "frame_embedding": False,
    }


def to_stdit_state_dict(weights: dict[str, torch.Tensor], model: STDiT) -> dict[str, torch.Tensor]:
    """`weights` (the 1.0 layout) as `model`'s state dict; every tensor is accounted for: a missing, a left-over
    or a mis-shaped one is an error that names it."""
    expected = model.state_dict()
    pairs = key_pairs(model.config.num_layers)
    missing = [theirs for theirs, _ in pairs if theirs not in weights]
    extra = sorted(set(weights) - {theirs for theirs, _ in pairs})
    if missing or extra:
        raise ValueError(f"the checkpoint is not in Open-Sora 1.0's layout for {model.config.num_layers} blocks: "
                         f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
                         f"unexpected {extra[:6]}{' ...' if len(extra) > 6 else ''}")  # fmt: skip
    out = {}
    for theirs, ours in pairs:
        tensor = weights[theirs]
        if theirs == "x_embedder.proj.weight":
            if tensor.ndim != 5 or tensor.shape[2] != 1:
                raise ValueError(f"{theirs} has shape {tuple(tensor.shape)}: expected (C, in, 1, p, p)")
            tensor = tensor[:, :, 0]  # the Conv3d's time kernel of 1: a Conv2d per frame
        want = [tuple(expected[o].shape) for o in ours]
        rows = sum(w[0] for w in want)
        if tuple(tensor.shape) != (rows, *want[0][1:]):
            raise ValueError(f"{theirs} has shape {tuple(tensor.shape)}, but this model's 1.0 layout holds "
                             f"{(rows, *want[0][1:])} there (for {', '.join(ours)})")  # fmt: skip
        for name, part in zip(ours, tensor.split([w[0] for w in want]), strict=True):
            out[name] = part.clone()
    return out


def to_opensora_v1_state_dict(model: STDiT) -> dict[str, torch.Tensor]:
    """A model with Open-Sora 1.0's temporal branch as a 1.0 checkpoint's weights (what `torch.save` writes and
    Open-Sora's loader reads)."""
    if model.config.temporal_branch != "opensora-v1":
        raise ValueError("only a model with temporal_branch='opensora-v1' has Open-Sora 1.0's layout; this one has "
                         f"{model.config.temporal_branch!r}")  # fmt: skip
    ours = model.state_dict()
    out = {}
    for theirs, names in key_pairs(model.config.num_layers):
        tensor = torch.cat([ours[n] for n in names]) if len(names) > 1 else ours[names[0]].clone()
        out[theirs] = tensor[:, :, None] if theirs == "x_embedder.proj.weight" else tensor
    return out


def stdit_from_opensora_v1(
    source: str | Path | dict, *, pixels: int | None = None, num_heads: int | None = None
) -> STDiT:
    """STDiT holding a 1.0 checkpoint's weights: `source` a file (.pth or .safetensors) or its loaded dict. `pixels`
    defaults to the release's resolution (from the file name), else 256."""
    name = Path(source).name if not isinstance(source, dict) else ""
    weights = unwrap(source) if isinstance(source, dict) else read_checkpoint(source)
    pixels = pixels or RELEASES.get(name, (256, 16))[0]
    model = STDiT(**config_from_checkpoint(weights, pixels=pixels, num_heads=num_heads))
    model.load_state_dict(to_stdit_state_dict(weights, model), strict=True)
    dtype = next(iter(weights.values())).dtype
    return model if dtype == model.dtype else model.to(dtype)
