"""The precompute step as a KFP component: one task per training stage's data."""

from kfp.dsl import Dataset, Input, Output

from components.common.kfp import component


@component
def precompute(
    captioned: Input[Dataset], latents: Output[Dataset], stage: int, workdir: str, recipe: str, overrides: str = "[]"
):
    """VAE latents and text embeddings of stage `stage`'s data: the recipe's `precompute` section under the stage's
    own `precompute` settings (buckets, frame sampling) and `subset` (only those clips are encoded). The keyed
    folders live on the volume (<workdir>/precompute/<key>/), so stages, and runs, whose data is the same share one;
    the `latents` artifact names the folder (LATEST)."""
    from components.common.kfp import task

    with task(f"precompute-stage-{stage}") as report:
        from pathlib import Path

        from components.common.kfp import section_values, step_settings
        from components.common.settings import stage_data, stage_sections
        from components.precompute.config import PrecomputeConfig
        from components.precompute.precompute import precompute as run_precompute

        data = stage_data(section_values(recipe, overrides, stage_sections(stage)))
        fixed = {**data, "manifest": str(Path(captioned.path) / "manifest.parquet"),
                 "out_root": str(Path(workdir) / "precompute"), "progress": False}  # fmt: skip
        result = run_precompute(step_settings(PrecomputeConfig, recipe, overrides, ("precompute",), fixed))
        Path(latents.path).mkdir(parents=True, exist_ok=True)
        (Path(latents.path) / "LATEST").write_text(f"{result.out_dir.resolve()}\n")
        buckets = result.index.groupby("bucket").size().to_dict()
        latents.metadata.update({"key": result.key, "samples": result.samples, "reused": result.reused,
                                 "stage": stage, "buckets": buckets, "folder": str(result.out_dir)})  # fmt: skip
        report.figure = (
            f"{result.samples} latents (those of an earlier task, {result.key})"
            if result.reused
            else f"{result.samples} latents written"
        )
