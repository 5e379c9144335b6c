"""Tiny random vision-language models with working processors, built offline for the demo, tests and benchmarks.

Each is a real transformers checkpoint folder (CLIP vision tower and Llama text model of 2 layers each, a
word-level tokenizer with the media tokens) that loads through the same `from_pretrained` path as LLaVA-1.6
or LLaVA-NeXT-Video; its captions are word salad, its code path is the production one.
"""

from __future__ import annotations

from pathlib import Path

from components.common.tiny import word_tokenizer


def _configs(tokenizer, size: int = 32, patch: int = 8):
    from transformers import CLIPVisionConfig, LlamaConfig

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=size,
        patch_size=patch,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return vision, text


def _llava_config_kwargs(tokenizer) -> dict:
    """What the image and the video LLaVA-NeXT configs share: the tiny towers, the image token, one 32 px tile."""
    vision, text = _configs(tokenizer)
    return {
        "vision_config": vision,
        "text_config": text,
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        "image_grid_pinpoints": [[32, 32]],
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -1,
    }


def build_tiny_llava_next(path: str | Path, seed: int = 0) -> Path:
    """A random LLaVA-NeXT (LLaVA-1.6) checkpoint folder with its processor."""
    import torch
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = word_tokenizer()
    config = LlavaNextConfig(**_llava_config_kwargs(tokenizer))
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    images = LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=[[32, 32]]
    )
    # CLIP's CLS token counts with the "default" feature strategy: one more token per image than patches
    processor = LlavaNextProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return Path(path)


def build_tiny_llava_next_video(path: str | Path, seed: int = 0) -> Path:
    """A random LLaVA-NeXT-Video checkpoint folder with its tokenizer and image-processor settings."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
    )

    tokenizer = word_tokenizer()
    config = LlavaNextVideoConfig(
        **_llava_config_kwargs(tokenizer),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        spatial_pool_stride=2,
    )
    torch.manual_seed(seed)
    LlavaNextVideoForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return Path(path)
