"""Tiny random models for the weight-based metrics' code paths: CLIP (transformers folder with a tokenizer), an
I3D-like TorchScript feature extractor with the FVD calling convention, and VideoMAE."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from components.common.tiny import word_tokenizer


def build_tiny_clip(path: str | Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = word_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    size = {"shortest_edge": 32}
    CLIPImageProcessor(size=size, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return Path(path)


class TinyI3D(nn.Module):
    """Two strided 3D convolutions and a pooled feature vector, called like the FVD I3D TorchScript."""

    def __init__(self, features: int = 24):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(3, 12, 3, stride=(1, 4, 4), padding=1), nn.ReLU(), nn.Conv3d(12, features, 3, stride=2)
        )
        self.head = nn.Linear(features, 10)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale:  # [0, 1] -> [-1, 1]
            x = x * 2 - 1
        if resize:
            x = nn.functional.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        f = self.body(x).mean(dim=(2, 3, 4))
        return f if return_features else self.head(f)


def build_tiny_i3d(path: str | Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(TinyI3D().eval()).save(str(path))
    return Path(path)


def build_tiny_videomae(path: str | Path, seed: int = 0) -> Path:
    from transformers import VideoMAEConfig, VideoMAEModel

    config = VideoMAEConfig(
        image_size=32,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    torch.manual_seed(seed)
    VideoMAEModel(config).save_pretrained(path)
    return Path(path)
