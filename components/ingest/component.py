"""The ingest step as KFP components: the shard list, one task per shard of the files (fanned out with ParallelFor),
the merge that writes the manifest.

`source` is folders, globs, list files or fsspec URLs such as s3://bucket/videos/ (comma-separated), or "synth": the
toy world the synth task wrote to `toy`. Each file's analysis is kept on the volume as soon as it is known
(<workdir>/cache/ingest, keyed by content and settings), so a retried shard, or a later run on the same footage,
does not redo it."""

from kfp.dsl import Dataset, Input, Output

from components.common.kfp import component


@component
def ingest_shard_ids(toy: Input[Dataset], source: str, recipe: str, overrides: str = "[]") -> list[int]:
    """[0, ..., n - 1]: the recipe's ingest.num_shards, or one shard per ingest.files_per_shard files found."""
    from components.common.kfp import task

    with task("ingest-shards") as report:
        from components.common.kfp import step_settings
        from components.common.shards import shard_count
        from components.ingest.config import IngestConfig, inputs_of
        from components.ingest.sources import discover

        cfg = step_settings(IngestConfig, recipe, overrides, ("ingest",), {"inputs": inputs_of(source, toy.path)})
        files = len(discover(cfg.inputs)[0])
        shards = shard_count(cfg.num_shards, cfg.files_per_shard, files)
        report.figure = f"{shards} shards of {files} files"
    return list(range(shards))


@component
def ingest_shard(
    toy: Input[Dataset],
    part: Output[Dataset],
    shard: int,
    source: str,
    workdir: str,
    run_id: str,
    recipe: str,
    overrides: str = "[]",
):
    """Analyse the files of shard `shard` (decode pass, scenes, scores); their results are the `part` artifact."""
    from components.common.kfp import task

    with task(f"ingest-shard-{shard}") as report:
        import shutil
        from pathlib import Path

        from components.common.kfp import step_settings
        from components.ingest.config import IngestConfig, inputs_of
        from components.ingest.ingest import ingest_shard as analyze_shard

        fixed = {"inputs": inputs_of(source, toy.path), "out_dir": str(Path(workdir) / run_id / "ingest"),
                 "cache_dir": str(Path(workdir) / "cache" / "ingest"), "shard": shard, "progress": False}  # fmt: skip
        written, files = analyze_shard(step_settings(IngestConfig, recipe, overrides, ("ingest",), fixed))
        shutil.copyfile(written, part.path)
        part.metadata.update({"shard": shard, "files": files})
        report.figure = f"{files} files analysed"


@component
def ingest_merge(
    toy: Input[Dataset],
    parts: Input[list[Dataset]],
    manifest: Output[Dataset],
    source: str,
    recipe: str,
    overrides: str = "[]",
):
    """Near-duplicates, split groups and the split across every shard's files; the ingest folder (manifest.parquet,
    summary.json, quarantine) is the `manifest` artifact."""
    from components.common.kfp import task

    with task("ingest-merge") as report:
        import json
        from pathlib import Path

        from components.common.kfp import step_settings
        from components.ingest.config import IngestConfig, inputs_of
        from components.ingest.ingest import ingest

        out = Path(manifest.path)
        out.mkdir(parents=True, exist_ok=True)
        fixed = {"inputs": inputs_of(source, toy.path), "out_dir": str(out), "num_shards": len(parts),
                 "merge": True, "progress": False}  # fmt: skip
        result = ingest(
            step_settings(IngestConfig, recipe, overrides, ("ingest",), fixed), [Path(p.path) for p in parts]
        )
        manifest.metadata.update({"clips": result.clips, "sources": result.sources, "source": source})
        print(json.dumps(result.summary, default=str)[:2000])
        report.figure = f"{result.clips} clips kept from {result.sources} files ({result.rejected_clips} rejected)"
