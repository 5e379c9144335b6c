"""The synth-or-ingest step as a KFP component."""

from kfp.dsl import Dataset, Output

from components.common.kfp import component


@component
def synth_or_ingest(
    manifest: Output[Dataset],
    source: str = "synth",
    synth_videos: int = 48,
    synth_images: int = 24,
    synth_cut_videos: int = 4,
    synth_size: int = 64,
    synth_seconds: float = 2.5,
    synth_seed: int = 0,
    synth_shape_scale: float = 0.14,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    min_seconds: float = 2.0,
    dedup_distance: int = -1,
    workers: int = 2,
):
    """`source` "synth": generate the toy world first and ingest it; otherwise ingest `source` (folders, globs,
    list files or fsspec URLs such as s3://bucket/videos/, comma-separated). Writes the ingest folder
    (manifest.parquet, summary.json, quarantine) to the `manifest` artifact."""
    import json
    from pathlib import Path

    from components.ingest.ingest import IngestConfig, ingest, with_overrides
    from components.ingest.synth import SynthConfig, synth

    out = Path(manifest.path)
    out.mkdir(parents=True, exist_ok=True)
    if source == "synth":
        toy = synth(
            SynthConfig(out_dir=str(out / "toy"), videos=synth_videos, images=synth_images,
                        cut_videos=synth_cut_videos, size=synth_size, seconds=synth_seconds, seed=synth_seed,
                        shape_scale=synth_shape_scale)
        )  # fmt: skip
        inputs = (str(toy),)
    else:
        inputs = tuple(s.strip() for s in source.split(",") if s.strip())
    cfg = IngestConfig(inputs=inputs, out_dir=str(out), val_fraction=val_fraction, split_seed=split_seed,
                       workers=workers, progress=False)  # fmt: skip
    cfg = with_overrides(cfg, min_seconds=min_seconds, dedup_distance=None if dedup_distance < 0 else dedup_distance)
    result = ingest(cfg)
    manifest.metadata.update({"clips": result.clips, "sources": result.sources, "source": source})
    print(json.dumps(result.summary, default=str)[:2000])
