import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model.planning.flops import Arch, forward_flops, param_counts
from tests.model.helpers import TEXT_TOKENS, inputs, randomize, tiny_stdit


@pytest.mark.parametrize(
    "overrides",
    [{}, {"attention_mode": "full"}, {"qk_norm": True, "out_channels": 8}],
    ids=["stdit", "full", "qknorm-sigma"],
)
def test_parameter_counts_match_the_model(overrides):
    model = tiny_stdit(**overrides)
    counts = param_counts(Arch.from_config(model.config))
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["temporal"] == sum(p.numel() for _, p in model.temporal_parameters())


@pytest.mark.parametrize("mode", ["spatial_temporal", "full"])
@pytest.mark.parametrize("frames", [1, 4])
def test_forward_flops_match_torch_flop_counter(mode, frames):
    """Every matmul, convolution and attention term: torch's own count of the model's forward agrees."""
    model = randomize(tiny_stdit(attention_mode=mode)).eval()
    x, t, text = inputs(batch=2, frames=frames, height=8, width=12)
    # the math backend decomposes attention into matmuls the counter sees (it skips fused CPU kernels)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, text)
    analytic = forward_flops(
        Arch.from_config(model.config), batch=2, frames=frames, height=8, width=12, text_tokens=TEXT_TOKENS
    )
    assert analytic.forward == pytest.approx(counter.get_total_flops(), rel=1e-9)


def test_training_step_counts_backward_and_recomputation():
    flops = forward_flops(Arch(num_layers=2, num_heads=2, head_dim=16), batch=1, frames=2, height=8, width=8)
    assert flops.train_step() == 3 * flops.forward
    assert flops.train_step(gradient_checkpointing=True) == 4 * flops.forward


def test_full_attention_costs_grow_quadratically_in_frames():
    st, full = Arch(28, 16, 72, variant="spatial_temporal"), Arch(28, 16, 72, variant="full")
    ratios = [
        forward_flops(full, batch=1, frames=f, height=64, width=64).forward
        / forward_flops(st, batch=1, frames=f, height=64, width=64).forward
        for f in (1, 16, 64)
    ]
    assert ratios[0] == pytest.approx(1.0)
    assert ratios[0] < ratios[1] < ratios[2]
    assert ratios[2] > 5  # Open-Sora measured 5x at 64 frames x 512 px


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        forward_flops(Arch(2, 2, 16), batch=1, frames=1, height=7, width=8)
