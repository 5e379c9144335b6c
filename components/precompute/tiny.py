"""Tiny random encoders, saved as real model folders: an SD-VAE-shaped AutoencoderKL (8x) and a T5 encoder with
a word-level tokenizer. They load through the same `from_pretrained` paths as the production encoders."""

from __future__ import annotations

from pathlib import Path

from components.common.tiny import word_tokenizer


def build_tiny_vae(path: str | Path, seed: int = 0, channels: tuple[int, ...] = (8, 8, 16, 16)) -> Path:
    """AutoencoderKL with the SD VAE's layout (4 blocks: 8x down, 4 latent channels) and tiny widths."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    n = len(channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=min(channels),
        sample_size=64,
        scaling_factor=0.18215,
    )
    vae.save_pretrained(path)
    return Path(path)


def build_tiny_t5(path: str | Path, seed: int = 0, d_model: int = 32) -> Path:
    """T5EncoderModel (2 layers) and its word-level tokenizer, in one folder."""
    import torch
    from transformers import T5Config, T5EncoderModel

    tokenizer = word_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    T5EncoderModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def build_tiny_video_vae(path: str | Path, seed: int = 0) -> Path:
    """AutoencoderKLCogVideoX (a causal 3D VAE) with tiny widths: 2x space, 2x time, 4 latent channels."""
    import torch
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(seed)
    AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 2,
        up_block_types=("CogVideoXUpBlock3D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        temporal_compression_ratio=2,
        sample_height=32,
        sample_width=32,
    ).save_pretrained(path)
    return Path(path)
