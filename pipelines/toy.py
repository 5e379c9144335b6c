"""The toy world's smallest useful precompute, made through the steps themselves (synth, ingest, caption from the
sidecar captions, precompute in pixel space with a tiny T5): what the tests and the GPU benchmark train on."""

from __future__ import annotations

from pathlib import Path


def small_precompute(root: Path) -> Path:
    """8 videos (one with a cut) and 6 stills at 32 px, 20% held out, buckets of 1 and 8 frames: the precompute
    folder under `root`."""
    from components.caption.caption import CaptionConfig, caption
    from components.common import settings
    from components.common.toy.tiny import build_tiny_t5
    from components.ingest.config import IngestConfig
    from components.ingest.ingest import ingest
    from components.precompute.config import PrecomputeConfig
    from components.precompute.precompute import precompute
    from components.synth.synth import SynthConfig, synth

    toy = synth(SynthConfig(out_dir=str(root / "toy"), videos=8, images=6, cut_videos=1, size=32, seconds=2.0))
    cfg = IngestConfig(inputs=(str(toy),), out_dir=str(root / "ingest"), progress=False, val_fraction=0.2)
    ingest(settings.updated(cfg, {"filters.dedup_distance": None, "split_distance": None}))
    caption(CaptionConfig(manifest=str(root / "ingest" / "manifest.parquet"), out_dir=str(root / "caption"),
                          captioner="metadata", progress=False))  # fmt: skip
    result = precompute(
        PrecomputeConfig(
            manifest=str(root / "caption" / "manifest.parquet"),
            out_root=str(root / "precompute"),
            vae="none:4",
            text_encoder=str(build_tiny_t5(root / "t5")),
            bucket_config={"32": {1: (1.0, 4), 8: (1.0, 2)}},
            frame_interval=4,
            progress=False,
        )
    )
    return Path(result.out_dir)
