"""Session fixtures shared by the step tests: a small toy world through ingest, caption and precompute, and the
three training stages on it (tiny STDiT, 32 px, pixel space)."""

from pathlib import Path

import pytest

from components.common import settings
from components.train.config import TrainConfig
from components.train.train import train
from pipelines.toy import small_precompute

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """A precompute folder: 8 videos (one with a cut) and 6 stills at 32 px, 20% held out."""
    return small_precompute(tmp_path_factory.mktemp("toy"))


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
