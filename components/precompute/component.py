"""The precompute step as a KFP component."""

from kfp.dsl import Dataset, Input, Output

from components.common.kfp import component


@component
def precompute(captioned: Input[Dataset], latents: Output[Dataset], recipe: str, overrides: str = "[]"):
    """VAE latents and text embeddings per clip, bucketed (the recipe's `precompute` section): a precompute root
    (keyed folder + LATEST)."""
    from pathlib import Path

    from components.common.kfp import step_settings
    from components.precompute.precompute import PrecomputeConfig
    from components.precompute.precompute import precompute as run_precompute

    fixed = {"manifest": str(Path(captioned.path) / "manifest.parquet"), "out_root": latents.path, "progress": False}
    result = run_precompute(step_settings(PrecomputeConfig, recipe, overrides, ("precompute",), fixed))
    latents.metadata.update({"key": result.key, "samples": result.samples})
