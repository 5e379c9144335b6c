"""An STDiT imported from PixArt is PixArt applied frame by frame, checked against diffusers' own PixArt code."""

import pytest
import torch
from diffusers import PixArtTransformer2DModel

from model.networks.stdit import STDiT
from model.weights.pixart import stdit_from_pixart
from tests.model.helpers import randomize


def tiny_pixart() -> PixArtTransformer2DModel:
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=32,
        sample_size=8,
        patch_size=2,
        caption_channels=24,
    )


@pytest.fixture(scope="module")
def pixart_dir(tmp_path_factory):
    torch.manual_seed(0)
    pixart = randomize(tiny_pixart(), std=0.1).eval()
    path = tmp_path_factory.mktemp("pixart") / "transformer"
    pixart.save_pretrained(path)
    return path


@pytest.mark.parametrize("size", [(8, 8), (6, 10)], ids=["native", "other"])
def test_imported_stdit_is_pixart_per_frame(pixart_dir, size):
    pixart = PixArtTransformer2DModel.from_pretrained(pixart_dir).eval()
    stdit = stdit_from_pixart(pixart_dir).eval()
    B, T = 2, 3
    g = torch.Generator().manual_seed(1)
    video = torch.randn(B, 4, T, *size, generator=g)
    text = torch.randn(B, 5, 24, generator=g)
    t = torch.tensor([10.0, 700.0])
    with torch.no_grad():
        out = stdit(video, t, text).sample  # (B, 8, T, H, W)
        for f in range(T):
            ref = pixart(video[:, :, f], encoder_hidden_states=text, timestep=t).sample  # (B, 8, H, W)
            assert (out[:, :, f] - ref).abs().max() < 1e-5


def test_import_maps_every_pixart_weight_and_zeroes_temporal_output(pixart_dir):
    pixart = PixArtTransformer2DModel.from_pretrained(pixart_dir)
    stdit = stdit_from_pixart(pixart)
    theirs = pixart.state_dict()
    ours = stdit.state_dict()
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    for block in stdit.transformer_blocks:
        assert block.attn_temp.to_out[0].weight.abs().sum() == 0
        assert block.attn_temp.to_q.weight.abs().sum() > 0  # fresh, not zero: only the output starts at zero
    assert isinstance(stdit, STDiT) and stdit.config.qk_norm is False


def test_micro_conditioned_pixart_is_refused_with_a_reason():
    pixart = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        cross_attention_dim=16,
        sample_size=8,
        caption_channels=8,
        use_additional_conditions=True,
    )
    with pytest.raises(ValueError, match="micro-conditions"):
        stdit_from_pixart(pixart)
