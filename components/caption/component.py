"""The caption step as KFP components: the shard list, one task per shard (fanned out with ParallelFor), the merge."""

from kfp.dsl import Dataset, Input, Output

from components.common.kfp import component


@component
def caption_shard_ids(recipe: str, overrides: str = "[]") -> list[int]:
    """[0, ..., num_shards - 1] (the recipe's caption.num_shards): the items the caption shards fan out over."""
    from components.common.kfp import task

    with task("caption-shards") as report:
        from components.caption.caption import CaptionConfig
        from components.common.kfp import step_settings

        shards = step_settings(CaptionConfig, recipe, overrides, ("caption",)).num_shards
        report.figure = f"{shards} shards"
    return list(range(shards))


@component
def caption_shard(
    manifest: Input[Dataset],
    part: Output[Dataset],
    shard: int,
    workdir: str,
    run_id: str,
    recipe: str,
    overrides: str = "[]",
):
    """Caption shard `shard` of caption.num_shards (clip i goes to shard i mod n); the part file is the output.
    The finished batches go to <workdir>/<run_id>/caption/parts on the volume first, so a retried task captions
    only what its killed attempt left."""
    from components.common.kfp import task

    with task(f"caption-shard-{shard}") as report:
        import shutil
        from pathlib import Path

        from components.caption.caption import CaptionConfig, caption, part_path
        from components.common.kfp import step_settings

        work = Path(workdir) / run_id / "caption"
        fixed = {"manifest": str(Path(manifest.path) / "manifest.parquet"), "out_dir": str(work), "shard": shard,
                 "progress": False}  # fmt: skip
        cfg = step_settings(CaptionConfig, recipe, overrides, ("caption",), fixed)
        result = caption(cfg)
        shutil.copyfile(part_path(work, shard, cfg.num_shards), part.path)
        part.metadata.update({"shard": shard, "captioned": result.captioned, "resumed": result.skipped})
        report.figure = f"{result.captioned} captions written" + (
            f" ({result.skipped} done before)" if result.skipped else ""
        )


@component
def caption_merge(
    manifest: Input[Dataset],
    parts: Input[list[Dataset]],
    captioned: Output[Dataset],
    recipe: str,
    overrides: str = "[]",
):
    """Merge the shards' part files into the captioned manifest (captions.parquet, manifest.parquet, summary)."""
    from components.common.kfp import task

    with task("caption-merge") as report:
        from pathlib import Path

        import pandas as pd

        from components.caption.caption import CaptionConfig, write_outputs
        from components.common.kfp import step_settings

        out = Path(captioned.path)
        out.mkdir(parents=True, exist_ok=True)
        source = Path(manifest.path) / "manifest.parquet"
        fixed = {"manifest": str(source), "out_dir": str(out), "num_shards": len(parts), "progress": False}
        cfg = step_settings(CaptionConfig, recipe, overrides, ("caption",), fixed)
        clips = len(pd.read_parquet(source))
        summary = write_outputs(pd.read_parquet(source), [Path(p.path) for p in parts], out, cfg)
        if summary["clips"] != clips:
            raise ValueError(f"{summary['clips']} captions for {clips} clips: a shard is missing")
        captioned.metadata.update({"clips": summary["clips"], "words_mean": summary["words_mean"]})
        report.figure = f"{summary['clips']} captions, {summary['words_mean']:.1f} words on average"
