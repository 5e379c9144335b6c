"""The synth-or-ingest step as a KFP component."""

from kfp.dsl import Dataset, Output

from components.common.kfp import component


@component
def synth_or_ingest(manifest: Output[Dataset], source: str, workdir: str, recipe: str, overrides: str = "[]"):
    """`source` "synth": generate the toy world (the recipe's `synth` section) first and ingest it; otherwise
    ingest `source` (folders, globs, list files or fsspec URLs such as s3://bucket/videos/, comma-separated) with
    the recipe's `ingest` section. Writes the ingest folder (manifest.parquet, summary.json, quarantine) to the
    `manifest` artifact. Each file's analysis is kept on the volume as soon as it is known (<workdir>/cache/ingest,
    keyed by content and settings), so a retried task, or a later run on the same footage, does not redo it."""
    from components.common.kfp import task

    with task("synth-or-ingest") as report:
        import json
        from pathlib import Path

        from components.common.kfp import step_settings
        from components.common.toy.synth import SynthConfig, synth
        from components.ingest.ingest import IngestConfig, ingest

        out = Path(manifest.path)
        out.mkdir(parents=True, exist_ok=True)
        if source == "synth":
            toy = synth(step_settings(SynthConfig, recipe, overrides, ("synth",), {"out_dir": str(out / "toy")}))
            inputs = [str(toy)]
        else:
            inputs = [s.strip() for s in source.split(",") if s.strip()]
        fixed = {"inputs": inputs, "out_dir": str(out), "cache_dir": str(Path(workdir) / "cache" / "ingest"),
                 "progress": False}  # fmt: skip
        result = ingest(step_settings(IngestConfig, recipe, overrides, ("ingest",), fixed))
        manifest.metadata.update({"clips": result.clips, "sources": result.sources, "source": source})
        print(json.dumps(result.summary, default=str)[:2000])
        report.figure = f"{result.clips} clips kept from {result.sources} files ({result.rejected_clips} rejected)"
