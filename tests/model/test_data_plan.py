"""The data-processing plan: the encoders' FLOPs as torch counts them on the real architectures, and the hours."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from model.planning.data import T5_XXL_FLOPS_PER_TOKEN, data_plan, encode_flops, vae_flops
from model.planning.gpus import gpu


def counted(module, *inputs) -> float:
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def test_the_vae_formula_is_what_torch_counts_on_the_sd_vae_encoder():
    from diffusers import AutoencoderKL

    with torch.device("meta"):  # the SD VAE's layout (sd-vae-ft-ema), no weights needed to count
        vae = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                            block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4)  # fmt: skip
    for h, w in ((64, 64), (256, 256), (256, 448)):
        x = torch.empty(1, 3, h, w, device="meta")
        assert counted(lambda x: vae.quant_conv(vae.encoder(x)), x) == vae_flops(h, w), (h, w)


def test_the_t5_figure_is_what_torch_counts_on_t5_xxl_within_attention():
    from transformers import T5Config, T5EncoderModel

    config = T5Config(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, feed_forward_proj="gated-gelu",
                      vocab_size=32128)  # fmt: skip
    with torch.device("meta"):
        t5 = T5EncoderModel(config)
    ids = torch.zeros(1, 120, dtype=torch.long, device="meta")
    flops = counted(lambda ids: t5(input_ids=ids), ids)
    assert flops == pytest.approx(120 * T5_XXL_FLOPS_PER_TOKEN, rel=0.03)  # the rest: attention over 120 tokens


def test_hours_scale_with_the_work_and_divide_over_the_resources():
    stages = [("a", 1000, 16, 256, 256), ("b", 100, 16, 512, 512)]
    plan = data_plan(stages, footage_hours=10.0, text_tokens=120, gpu=gpu("h100"), num_gpus=8, cores=64,
                     ingest_rate=2.0, encode_mfu=0.5)  # fmt: skip
    assert plan.ingest_core_hours == 5.0 and plan.ingest_hours == 5.0 / 64
    a = 1000 * encode_flops(16, 256, 256, 120) / (989.4e12 * 0.5) / 3600
    assert plan.encode["a"] == (1000, pytest.approx(a))
    assert (
        plan.encode_gpu_hours == pytest.approx(a + plan.encode["b"][1])
        and plan.encode_hours == plan.encode_gpu_hours / 8
    )
    with pytest.raises(ValueError, match="must be positive"):
        data_plan(stages, footage_hours=1.0, text_tokens=120, gpu=gpu("h100"), num_gpus=1, cores=1, ingest_rate=0.0)
