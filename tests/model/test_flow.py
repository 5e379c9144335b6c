import math

import pytest
import torch

from model.schedulers.config import FlowConfig
from model.schedulers.flow import (
    draw,
    flow_loss,
    sample,
    shift_timesteps,
    timestep_shift_factor,
    training_loss,
)
from tests.model.helpers import inputs, randomize, tiny_stdit


def test_per_sample_draws_do_not_depend_on_the_batch_split():
    cfg = FlowConfig(caption_dropout=0.5)
    whole = draw(cfg, (4, 3, 8, 8), seed=7, step=11, indices=[0, 1, 2, 3])
    halves = [draw(cfg, (4, 3, 8, 8), seed=7, step=11, indices=i) for i in ([0, 1], [2, 3])]
    assert torch.equal(whole.noise, torch.cat([h.noise for h in halves]))
    assert torch.equal(whole.t, torch.cat([h.t for h in halves]))
    assert torch.equal(whole.drop_caption, torch.cat([h.drop_caption for h in halves]))
    other_step = draw(cfg, (4, 3, 8, 8), seed=7, step=12, indices=[0, 1, 2, 3])
    assert not torch.equal(whole.noise, other_step.noise)


def test_timesteps_are_logit_normal_and_shift_towards_noise_for_bigger_inputs():
    cfg = FlowConfig(caption_dropout=0.1)
    assert timestep_shift_factor(cfg, (4, 1, 64, 64)) == 1.0  # 512x512 px
    assert timestep_shift_factor(cfg, (4, 16, 64, 64)) == 4.0  # and 16 latent frames
    small = FlowConfig(caption_dropout=0.1, base_pixels=8 * 8 * 8 * 8)  # the same shifts on 8x8 latents: less noise
    n = 2000
    image = draw(small, (4, 1, 8, 8), seed=0, step=0, indices=range(n))
    assert image.t.min() > 0 and image.t.max() < 1
    assert abs(torch.logit(image.t).mean()) < 0.1 and abs(torch.logit(image.t).std() - 1) < 0.1
    assert 0.05 < image.drop_caption.float().mean() < 0.15
    video = draw(small, (4, 16, 8, 8), seed=0, step=0, indices=range(n))
    assert timestep_shift_factor(small, (4, 16, 8, 8)) == 4.0 and timestep_shift_factor(small, (4, 1, 8, 8)) == 1.0
    assert video.t.mean() > image.t.mean() + 0.2
    t = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(shift_timesteps(t, 3.0), torch.tensor([0.0, 0.75, 1.0]))
    assert timestep_shift_factor(FlowConfig(shift=3.0), (4, 16, 64, 64)) == 3.0
    assert timestep_shift_factor(FlowConfig(resolution_shift=False), (4, 16, 64, 64)) == 1.0


def test_a_uniform_share_reaches_the_low_noise_end_and_leaves_the_other_draws_alone():
    shape, n = (4, 8, 8, 8), 4000
    plain = draw(FlowConfig(shift=3.0), shape, seed=0, step=3, indices=range(n))
    mixed = draw(FlowConfig(shift=3.0, uniform_share=0.25), shape, seed=0, step=3, indices=range(n))
    assert (plain.t < 0.1).float().mean() < 0.002  # the last sampling steps' noise levels: almost never trained
    assert 0.02 < (mixed.t < 0.1).float().mean() < 0.035  # a quarter of the draws, uniform: 2.5%
    kept = mixed.t == plain.t
    assert 0.72 < kept.float().mean() < 0.78  # the other three quarters are the logit-normal draws themselves
    assert torch.equal(mixed.noise, plain.noise) and torch.equal(mixed.drop_caption, plain.drop_caption)
    split = [draw(FlowConfig(shift=3.0, uniform_share=0.25), shape, seed=0, step=3, indices=i) for i in ([0, 1], [2])]
    assert torch.equal(torch.cat([d.t for d in split]), mixed.t[:3])
    with pytest.raises(ValueError, match=r"uniform_share=1\.5"):
        FlowConfig(uniform_share=1.5)


def test_loss_is_zero_for_the_true_velocity():
    class Oracle(torch.nn.Module):
        def forward(self, x_t, timestep, text, mask=None, drop=None):
            t = (timestep / 1000).view(-1, 1, 1, 1, 1)
            return type("Out", (), {"sample": (x_t - x0) / t})()  # x_t = x0 + t (noise - x0)

    x0 = torch.randn(2, 4, 2, 8, 8)
    noise, t = torch.randn_like(x0), torch.tensor([0.3, 0.8])
    loss = flow_loss(Oracle(), x0, noise, t, torch.zeros(2, 1, 1))
    assert loss.shape == (2,) and loss.max() < 1e-10


def test_optimizer_steps_give_a_finite_loss_and_move_the_weights():
    torch.manual_seed(0)
    model = tiny_stdit(out_channels=8).train()  # learned sigma: only the first half is the velocity
    x0, _, text = inputs(frames=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    # zero-initialised output projections pass gradient one layer further inwards per step
    for step in range(3):
        loss = training_loss(model, x0, text, None, FlowConfig(), seed=0, step=step, indices=[0, 1])
        assert math.isfinite(loss.item()) and loss.item() > 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert "proj_out.weight" in moved
    assert "transformer_blocks.0.attn1.to_q.weight" in moved
    assert "transformer_blocks.1.attn_temp.to_q.weight" in moved


def test_training_loss_is_the_same_however_the_batch_is_split():
    model = randomize(tiny_stdit()).eval()
    x0, _, text = inputs(batch=4, frames=2, seed=3)
    cfg = FlowConfig(caption_dropout=0.5)
    with torch.no_grad():
        whole = training_loss(model, x0, text, None, cfg, seed=1, step=5, indices=[0, 1, 2, 3])
        halves = [
            training_loss(model, x0[i : i + 2], text[i : i + 2], None, cfg, seed=1, step=5, indices=[i, i + 1])
            for i in (0, 2)
        ]
    assert whole.item() == pytest.approx(sum(h.item() for h in halves) / 2, rel=1e-6)


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_sampling_shape_and_determinism(guidance):
    model = randomize(tiny_stdit(), std=0.05).eval()
    _, _, text = inputs(batch=2)
    shape = (2, 4, 3, 8, 8)
    runs = [
        sample(
            model,
            shape,
            text,
            num_steps=4,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(s),
        )
        for s in (0, 0, 1)
    ]
    assert runs[0].shape == shape and torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_guidance_changes_the_sample():
    model = randomize(tiny_stdit(), std=0.05).eval()
    _, _, text = inputs(batch=2)
    a, b = (
        sample(
            model,
            (2, 4, 2, 8, 8),
            text,
            num_steps=3,
            guidance_scale=s,
            generator=torch.Generator().manual_seed(0),
        )
        for s in (1.0, 5.0)
    )
    assert not torch.allclose(a, b)


def test_euler_sampling_with_an_exact_velocity_recovers_the_data():
    target = torch.randn(1, 4, 1, 8, 8)

    class Straight(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x_t, timestep, text, mask=None, drop=None):
            t = (timestep / 1000).view(-1, 1, 1, 1, 1)
            noise = (x_t - (1 - t) * target) / t
            return type("Out", (), {"sample": noise - target})()

    out = sample(Straight(), (1, 4, 1, 8, 8), torch.zeros(1, 1, 1), num_steps=5, guidance_scale=1.0)
    assert torch.allclose(out, target, atol=1e-5)
