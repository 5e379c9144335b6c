"""The precompute step as a KFP component."""

from kfp.dsl import Dataset, Input, Output

from components.common.kfp import component


@component
def precompute(
    captioned: Input[Dataset],
    latents: Output[Dataset],
    vae: str = "stabilityai/sd-vae-ft-ema",
    text_encoder: str = "DeepFloyd/t5-v1_1-xxl",
    max_text_tokens: int = 300,
    buckets: str = '{"256": {"1": [1.0, 32], "16": [1.0, 4]}}',
    frame_interval: int = 2,
):
    """VAE latents and text embeddings per clip, bucketed: a precompute root (keyed folder + LATEST)."""
    import json
    from pathlib import Path

    from components.precompute.precompute import PrecomputeConfig
    from components.precompute.precompute import precompute as run_precompute

    result = run_precompute(
        PrecomputeConfig(manifest=str(Path(captioned.path) / "manifest.parquet"), out_root=latents.path, vae=vae,
                         text_encoder=text_encoder, max_text_tokens=max_text_tokens,
                         bucket_config=json.loads(buckets), frame_interval=frame_interval, progress=False)
    )  # fmt: skip
    latents.metadata.update({"key": result.key, "samples": result.samples})
