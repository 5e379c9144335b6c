"""Session fixtures shared by the step tests: a small toy world through ingest, caption and precompute, and the
three training stages on it (tiny STDiT, 32 px, pixel space)."""

from pathlib import Path

import pytest

from components.caption.caption import CaptionConfig, caption
from components.common import settings
from components.common.toy.synth import SynthConfig, synth
from components.common.toy.tiny import build_tiny_t5
from components.ingest.ingest import IngestConfig, ingest
from components.precompute.precompute import PrecomputeConfig, precompute
from components.train.config import TrainConfig
from components.train.train import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """A precompute folder: 8 videos (one with a cut) and 6 stills at 32 px, 20% held out."""
    root = tmp_path_factory.mktemp("toy")
    toy = synth(SynthConfig(out_dir=str(root / "toy"), videos=8, images=6, cut_videos=1, size=32, seconds=2.0))
    cfg = IngestConfig(inputs=(str(toy),), out_dir=str(root / "ingest"), progress=False, val_fraction=0.2)
    ingest(settings.updated(cfg, {"filters.dedup_distance": None}))
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
    return result.out_dir


def toy_stage_config(data, out, stage, *overrides):
    """The toy recipe's shared training settings (params.yaml, section `train`) for `stage`, with test overrides."""
    items = [f"data={data}", f"out_dir={out}", f"stage={stage}", "progress=false", *overrides]
    return settings.load(TrainConfig, recipe=ROOT / "params.yaml", sections=("train",), overrides=items)


@pytest.fixture(scope="session")
def toy_chain(toy_data, tmp_path_factory):
    """Stages 1, 2 and 3 in sequence, each from the previous export: their TrainResults."""
    root = tmp_path_factory.mktemp("chain")
    one = train(toy_stage_config(toy_data, root / "s1", 1, "max_steps=60"))
    two = train(toy_stage_config(toy_data, root / "s2", 2, "max_steps=80", f"model.init={one.export_dir}"))
    three = train(
        toy_stage_config(
            toy_data, root / "s3", 3, "max_steps=60", f"model.init={two.export_dir}", "subset={motion: 0.0}"
        )
    )
    return one, two, three
