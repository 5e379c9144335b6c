"""A training stage starts from Open-Sora 1.0's released weights: model.init names the checkpoint file itself."""

import json

import numpy as np
import torch

from components.train.train import train
from model.networks.stdit import STDiT
from model.weights.hub import file_sha256
from tests.components.conftest import toy_stage_config
from tests.model.test_opensora import documented_layout


def test_a_stage_trains_on_from_an_open_sora_checkpoint_and_its_lineage_names_the_file(toy_data, tmp_path):
    """model.init as the 1.0 checkpoint file itself: the toy world's pixel-space latents (48 channels), its tiny T5
    (32 wide, 16 tokens); the stage continues in rectified flow and keeps Open-Sora 1.0's block."""
    g = torch.Generator().manual_seed(0)
    layout = documented_layout(cin=48, cout=96, cap=32, tokens=16)
    source = tmp_path / "OpenSora-v1-tiny.pth"
    torch.save({k: torch.randn(s, generator=g) * 0.02 for k, s in layout.items()}, source)
    settings = ["max_steps=4", "val_every=0", "ckpt_every=0", "sample_every=0", f"model.init={source}",
                "model.overrides={num_attention_heads: 2}"]  # fmt: skip
    result = train(toy_stage_config(toy_data, tmp_path / "run", 1, *settings))
    assert len(result.losses) == 4 and all(np.isfinite(result.losses))
    imported, trained = json.loads((result.export_dir / "lineage.json").read_text())
    assert imported["imported_from"] == str(source) and imported["checkpoint_sha256"] == file_sha256(source)
    assert trained["config"]["model"]["init"] == str(source)
    model = STDiT.from_pretrained(result.export_dir)
    assert model.config.temporal_branch == "opensora-v1" and model.config.out_channels == 96
    # trained here with caption dropout as 1.0 drops captions, sampled the same way: the null caption under the
    # prompt's mask; the captions it learned from are this product's own, so prompts keep their case
    index = json.loads((result.export_dir.parent / "pipeline" / "model_index.json").read_text())
    assert index["null_caption_mask"] == "prompt" and not index["lowercase_prompts"]
