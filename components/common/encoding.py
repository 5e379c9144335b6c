"""What a training sample is (its bucket, its frames, its encoders): the settings precompute and online encoding
share. Settings only: the command lines read them without loading the encoders."""

from __future__ import annotations

from dataclasses import dataclass

from components.common.settings import setting
from model.planning.buckets import DEFAULT_BUCKETS
from model.weights.hub import PRODUCTION_MODELS


@dataclass(frozen=True)
class EncodingConfig:
    """What a sample is: which clips go to which bucket, which frames are read, how they are encoded. Shared by
    precompute (which stores the result) and training with online encoding (which encodes as it reads)."""

    manifest: str = setting("data/caption/manifest.parquet", "captioned manifest")
    vae: str = setting(
        PRODUCTION_MODELS["precompute.vae"],
        "a diffusers AutoencoderKL or AutoencoderKLCogVideoX (hub id, model folder or pipeline folder), or "
        "none[:F] for pixel space through an exact space-to-depth autoencoder (the toy world)",
    )
    text_encoder: str = setting(
        PRODUCTION_MODELS["precompute.text_encoder"], "a T5 encoder with its tokenizer (hub id or folder)"
    )
    max_text_tokens: int = setting(300, "caption tokens kept")
    bucket_config: dict = setting(
        DEFAULT_BUCKETS,
        "buckets {resolution: {frames: [probability, batch size]}} (Open-Sora's bucket_config), YAML or a file",
    )
    subset: dict = setting({}, "only the clips that meet these scores: {aes: 5.0} (a minimum), {ocr: {max: 0.02}}")
    frame_interval: int = setting(1, "take every k-th frame")
    target_fps: float | None = setting(None, "sample frames at this rate instead (interval: round(fps / target))")
    seed: int = setting(0, "seed of the bucket draws")
    device: str | None = setting(None, "cuda or cpu (default: cuda when present)")

    def models(self) -> dict[str, str | None]:
        """The pretrained weights these settings load, by setting (a task checks them at its start)."""
        vae = None if self.vae.split(":")[0] == "none" else self.vae
        return {"precompute.vae": vae, "precompute.text_encoder": self.text_encoder}
