"""The caption step as KFP components: the shard list, one task per shard (fanned out with ParallelFor), the merge."""

from kfp.dsl import Dataset, Input, Output

from components.common.kfp import component


@component
def caption_shard_ids(num_shards: int) -> list[int]:
    """[0, ..., num_shards - 1]: the items the caption shards fan out over."""
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards} must be at least 1")
    return list(range(num_shards))


@component
def caption_shard(
    manifest: Input[Dataset],
    part: Output[Dataset],
    shard: int,
    num_shards: int,
    captioner: str = "vlm",
    model: str = "llava-hf/llava-v1.6-mistral-7b-hf",
    batch_size: int = 8,
):
    """Caption shard `shard` of `num_shards` (clip i goes to shard i mod n); the part file is the output."""
    import shutil
    from pathlib import Path

    from components.caption.caption import CaptionConfig, caption, part_path

    work = Path(part.path).with_name("work")
    cfg = CaptionConfig(manifest=str(Path(manifest.path) / "manifest.parquet"), out_dir=str(work),
                        captioner=captioner, model=model, batch_size=batch_size, shard=shard,
                        num_shards=num_shards, progress=False)  # fmt: skip
    result = caption(cfg)
    shutil.copyfile(part_path(work, shard, num_shards), part.path)
    part.metadata.update({"shard": shard, "captioned": result.captioned})


@component
def caption_merge(
    manifest: Input[Dataset],
    parts: Input[list[Dataset]],
    captioned: Output[Dataset],
    captioner: str = "vlm",
    model: str = "llava-hf/llava-v1.6-mistral-7b-hf",
):
    """Merge the shards' part files into the captioned manifest (captions.parquet, manifest.parquet, summary)."""
    from pathlib import Path

    import pandas as pd

    from components.caption.caption import CaptionConfig, write_outputs

    out = Path(captioned.path)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(manifest.path) / "manifest.parquet"
    cfg = CaptionConfig(manifest=str(source), out_dir=str(out), captioner=captioner, model=model,
                        num_shards=len(parts), progress=False)  # fmt: skip
    summary = write_outputs(pd.read_parquet(source), [Path(p.path) for p in parts], out, cfg)
    if summary["clips"] != len(pd.read_parquet(source)):
        raise ValueError(f"{summary['clips']} captions for {len(pd.read_parquet(source))} clips: a shard is missing")
    captioned.metadata.update({"clips": summary["clips"], "words_mean": summary["words_mean"]})
