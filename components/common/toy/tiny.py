"""Tiny random models for the demo, the tests and the benchmarks, built offline and saved as real model folders
that load through the production `from_pretrained` paths:

- a word-level tokenizer over the toy world's words (every tiny model's text side);
- encoders: an SD-VAE-layout AutoencoderKL, a CogVideoX-style 3D VAE, a T5 encoder;
- captioners: LLaVA-NeXT and LLaVA-NeXT-Video (CLIP vision tower and Llama text model of 2 layers each);
- the text-to-image transformer that stage 1 imports: a PixArt-alpha transformer (in transformer/, as in its hub repo);
- evaluation: CLIP (CLIPScore), an I3D-like TorchScript feature extractor (FVD), VideoMAE;
- ingest's scorers: an aesthetic MLP head (a state dict, as LAION's) and a DB-style text detector in ONNX.

Their outputs are noise; their code paths are the production ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

_WORDS = (
    "a the an and of on in with to is are red green blue yellow circle square triangle shape moves rests "
    "left right up down black white gray background video image scene camera slowly quickly bright dark "
    "small large describe this detail objects setting style sentences"
)
VOCAB = _WORDS.split()
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "<video>"]


def word_tokenizer():
    """A fast word-level tokenizer over VOCAB with pad/bos/eos/unk and the <image>/<video> media tokens.

    Text is lowercased first (the vocabulary is lowercase): "A red circle" and "a red circle" are the same tokens,
    as cleaned-up training captions start with a capital and typed prompts often do not."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator([" ".join(VOCAB)], trainers.WordLevelTrainer(special_tokens=SPECIAL))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )


def build_tiny_vae(path: str | Path, seed: int = 0, channels: tuple[int, ...] = (8, 8, 16, 16)) -> Path:
    """AutoencoderKL with the SD VAE's layout (4 blocks: 8x down, 4 latent channels) and tiny widths."""
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
            "projection_dim": 16,
        },
        # the towers carry projection_dim too, as openai/clip-vit-large-patch14's config does: a
        # CLIPVisionModelWithProjection (the aesthetic scorer) built from this folder reads the vision tower's
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 16,
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


def build_tiny_pixart(
    path: str | Path,
    seed: int = 0,
    *,
    num_layers: int = 2,
    num_attention_heads: int = 2,
    attention_head_dim: int = 16,
    caption_channels: int = 32,
    in_channels: int = 4,
    sample_size: int = 8,
    patch_size: int = 2,
) -> Path:
    """A PixArt-alpha transformer (diffusers PixArtTransformer2DModel, learned sigma: out = 2 x in channels) saved in
    `path`/transformer/, the layout of the PixArt-alpha hub repositories. `caption_channels` is the text encoder's
    width (build_tiny_t5's d_model), `in_channels` the VAE's latent channels."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    PixArtTransformer2DModel(
        num_attention_heads=num_attention_heads,
        attention_head_dim=attention_head_dim,
        in_channels=in_channels,
        out_channels=2 * in_channels,
        num_layers=num_layers,
        cross_attention_dim=num_attention_heads * attention_head_dim,
        sample_size=sample_size,
        patch_size=patch_size,
        caption_channels=caption_channels,
    ).save_pretrained(Path(path) / "transformer")
    return Path(path)


def build_tiny_aesthetic_head(path: str | Path, width: int = 16, seed: int = 0, center: float = 5.0) -> Path:
    """An aesthetic head for build_tiny_clip's embeddings, saved as LAION's predictor ships it (a state dict with
    `layers.<i>.weight/bias` keys of Linear layers). Random weights would score every image alike; this head is
    calibrated instead, so its scores straddle a production threshold: on the unit-norm embeddings of a spread of
    generated images (colour fields with shapes, textures) it reads the main direction of variation, scaled to one
    point per standard deviation around `center` (LAION's scale: 5 fair)."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    with tempfile.TemporaryDirectory() as tmp:
        clip = build_tiny_clip(Path(tmp) / "clip", seed=seed)
        processor = CLIPImageProcessor.from_pretrained(clip)
        model = CLIPVisionModelWithProjection.from_pretrained(clip).eval()
        if model.config.projection_dim != width:
            raise ValueError(f"width={width}: the tiny CLIP's embeddings are {model.config.projection_dim}-d")
        with torch.no_grad():
            pixels = processor(images=list(_calibration_images(seed)), return_tensors="pt")["pixel_values"]
            emb = model(pixel_values=pixels).image_embeds
        emb = emb / emb.norm(dim=-1, keepdim=True)
    centred = emb - emb.mean(0)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    spread = (centred @ direction).std()
    head = nn.Linear(width, 1)
    with torch.no_grad():
        head.weight.copy_((direction / spread)[None])
        head.bias.fill_(center - float(emb.mean(0) @ direction / spread))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"layers.0.{k}": v for k, v in head.state_dict().items()}, path)
    return Path(path)


def _calibration_images(seed: int, count: int = 48, size: int = 64):
    """Generated RGB images (uint8, HxWx3): colour fields with a shape on them, and smoothed noise textures."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        if i % 2:
            noise = rng.random((size // 8, size // 8, 3))
            image = np.kron(noise, np.ones((8, 8, 1)))
        else:
            image = np.broadcast_to(rng.random(3), (size, size, 3)).copy()
            cy, cx = rng.integers(8, size - 8, 2).tolist()
            r = int(rng.integers(4, size // 3))
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3)
        yield (image * 255).astype(np.uint8)


def build_tiny_db_detector(path: str | Path) -> Path:
    """An ONNX 'DB text detector' whose probability map (1, 1, H, W) is high on bright pixels: text = white boxes."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [20 / 3] * 3)
    bias = helper.make_tensor("b", TensorProto.FLOAT, [1], [0.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["z"]), helper.make_node("Sigmoid", ["z"], ["y"])],
        "bright_text",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "h", "w"])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return Path(path)
