"""The precompute step as KFP components: the encoding tasks of every stage's data (the shard list), one task per
shard (fanned out with ParallelFor, one GPU each), and the merge that makes each stage's keyed folder.

Each stage's data is the recipe's `precompute` section under the stage's own `precompute` settings (buckets, frame
sampling) and `subset`. The keyed folders live on the volume (<workdir>/precompute/<key>/), so stages, and runs,
whose data is the same share one: it is encoded once. A shard's task loads the encoders once and writes its files
of every stage's data; a retried task goes on from the files its killed attempt wrote."""

from kfp.dsl import Dataset, Input, Output

from components.common.kfp import component


@component
def precompute_shard_ids(captioned: Input[Dataset], workdir: str, recipe: str, overrides: str = "[]") -> list[int]:
    """[0, ..., n - 1]: see `num_shards`."""
    from components.common.kfp import task

    with task("precompute-shards") as report:
        from components.precompute.stages import distinct, num_shards, stage_layouts

        data = distinct(stage_layouts(captioned.path, workdir, recipe, overrides))
        shards = num_shards(data)
        report.figure = f"{shards} shards of {sum(plan.clips for _, plan in data.values())} clips to encode"
    return list(range(shards))


@component
def precompute_shard(
    captioned: Input[Dataset],
    part: Output[Dataset],
    shard: int,
    workdir: str,
    recipe: str,
    overrides: str = "[]",
):
    """Encode shard `shard`'s files (every num_shards-th) of each stage's data; `part` lists what it wrote."""
    from components.common.kfp import task

    with task(f"precompute-shard-{shard}") as report:
        import json
        from pathlib import Path

        from components.precompute.precompute import encode_files
        from components.precompute.stages import distinct, num_shards, stage_layouts

        data = distinct(stage_layouts(captioned.path, workdir, recipe, overrides))
        encoded = {key: encode_files(cfg, plan, shard, num_shards(data)) for key, (cfg, plan) in data.items()}
        Path(part.path).write_text(json.dumps(encoded))
        part.metadata.update({"shard": shard, "files": encoded})
        report.figure = f"{sum(encoded.values())} files encoded"


@component
def precompute_merge(
    captioned: Input[Dataset],
    parts: Input[list[Dataset]],
    stage1: Output[Dataset],
    stage2: Output[Dataset],
    stage3: Output[Dataset],
    workdir: str,
    recipe: str,
    overrides: str = "[]",
):
    """Each stage's keyed folder from the shards' files (index.parquet, meta.json); each `stage<N>` artifact names
    its stage's folder (LATEST)."""
    from components.common.kfp import task

    with task("precompute-merge") as report:
        from pathlib import Path

        from components.precompute.layout import finish
        from components.precompute.stages import distinct, stage_layouts

        stages = stage_layouts(captioned.path, workdir, recipe, overrides)
        results = {key: finish(cfg, plan) for key, (cfg, plan) in distinct(stages).items()}
        figures = []
        for n, latents in ((1, stage1), (2, stage2), (3, stage3)):
            result = results[stages[n][1].key]
            Path(latents.path).mkdir(parents=True, exist_ok=True)
            (Path(latents.path) / "LATEST").write_text(f"{result.out_dir.resolve()}\n")
            buckets = result.index.groupby("bucket").size().to_dict()
            latents.metadata.update({"key": result.key, "samples": result.samples, "reused": result.reused,
                                     "stage": n, "buckets": buckets, "folder": str(result.out_dir)})  # fmt: skip
            figures.append(f"stage {n}: {result.samples}")
        report.figure = f"latents of {len(results)} data: " + ", ".join(figures)
