"""The ingest step as a KFP component."""

from kfp.dsl import Dataset, Input, Output

from components.common.kfp import component


@component
def ingest(manifest: Output[Dataset], toy: Input[Dataset], source: str, workdir: str, recipe: str,
           overrides: str = "[]"):  # fmt: skip
    """Ingest `source` (folders, globs, list files or fsspec URLs such as s3://bucket/videos/, comma-separated), or
    with `source` "synth" the toy world that the synth task wrote to `toy`, with the recipe's `ingest` section.
    Writes the ingest folder (manifest.parquet, summary.json, quarantine) to the `manifest` artifact. Each file's
    analysis is kept on the volume as soon as it is known (<workdir>/cache/ingest, keyed by content and settings),
    so a retried task, or a later run on the same footage, does not redo it."""
    from components.common.kfp import task

    with task("ingest") as report:
        import json
        from pathlib import Path

        from components.common.kfp import step_settings
        from components.ingest.ingest import IngestConfig
        from components.ingest.ingest import ingest as run_ingest

        out = Path(manifest.path)
        out.mkdir(parents=True, exist_ok=True)
        inputs = [toy.path] if source == "synth" else [s.strip() for s in source.split(",") if s.strip()]
        fixed = {"inputs": inputs, "out_dir": str(out), "cache_dir": str(Path(workdir) / "cache" / "ingest"),
                 "progress": False}  # fmt: skip
        result = run_ingest(step_settings(IngestConfig, recipe, overrides, ("ingest",), fixed))
        manifest.metadata.update({"clips": result.clips, "sources": result.sources, "source": source})
        print(json.dumps(result.summary, default=str)[:2000])
        report.figure = f"{result.clips} clips kept from {result.sources} files ({result.rejected_clips} rejected)"
