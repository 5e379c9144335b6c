"""Open-Sora 1.0 checkpoints: every key of the documented layout maps onto STDiT with Open-Sora 1.0's temporal branch
and back bit for bit, and the imported model computes what the documented formulas say.

The checkpoints here are built from the documented layout (key, shape) with random values, and `reference_forward`
is Open-Sora 1.0's STDiT written from its documented semantics in plain torch on those tensors: nothing of the
product's modules is used to make either."""

import math

import pytest
import torch
import torch.nn.functional as F

from model.networks.stdit import STDiT
from model.weights.opensora import (
    config_from_checkpoint,
    stdit_from_opensora_v1,
    to_opensora_v1_state_dict,
)

WIDTH, HEADS, LAYERS, IN, OUT, CAPTION, TOKENS, P = 32, 2, 2, 4, 8, 24, 6, 2


def documented_layout(c=WIDTH, layers=LAYERS, cin=IN, cout=OUT, cap=CAPTION, tokens=TOKENS, p=P) -> dict:
    """{key: shape} of a 1.0 checkpoint, as the layout table documents it."""
    shapes = {
        "x_embedder.proj.weight": (c, cin, 1, p, p), "x_embedder.proj.bias": (c,),
        "t_embedder.mlp.0.weight": (c, 256), "t_embedder.mlp.0.bias": (c,),
        "t_embedder.mlp.2.weight": (c, c), "t_embedder.mlp.2.bias": (c,),
        "t_block.1.weight": (6 * c, c), "t_block.1.bias": (6 * c,),
        "y_embedder.y_proj.fc1.weight": (c, cap), "y_embedder.y_proj.fc1.bias": (c,),
        "y_embedder.y_proj.fc2.weight": (c, c), "y_embedder.y_proj.fc2.bias": (c,),
        "y_embedder.y_embedding": (tokens, cap),
        "final_layer.scale_shift_table": (2, c),
        "final_layer.linear.weight": (p * p * cout, c), "final_layer.linear.bias": (p * p * cout,),
    }  # fmt: skip
    for i in range(layers):
        b = f"blocks.{i}."
        shapes[b + "scale_shift_table"] = (6, c)
        for name, rows in (("attn.qkv", 3 * c), ("attn.proj", c), ("attn_temp.qkv", 3 * c), ("attn_temp.proj", c),
                           ("cross_attn.q_linear", c), ("cross_attn.kv_linear", 2 * c), ("cross_attn.proj", c),
                           ("mlp.fc1", 4 * c)):  # fmt: skip
            shapes[f"{b}{name}.weight"], shapes[f"{b}{name}.bias"] = (rows, c), (rows,)
        shapes[b + "mlp.fc2.weight"], shapes[b + "mlp.fc2.bias"] = (c, 4 * c), (c,)
    return shapes


def checkpoint(seed: int = 0, std: float = 0.2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * std for k, shape in documented_layout().items()}


# ------------------------------------------------------------------ Open-Sora 1.0's STDiT, from its documentation


def sincos(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N, dim): sin of position x frequency, then cos, frequencies 1 / 10000^(k / (dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def linear(w, name, x):
    return F.linear(x, w[name + ".weight"], w[name + ".bias"])


def attention(q, k, v, heads, mask=None):
    """(N, Lq, C) queries over (N, Lk, C) keys and values; mask (N, Lk) True = attend."""
    n, lq, c = q.shape
    split = [t.reshape(n, t.shape[1], heads, c // heads).transpose(1, 2) for t in (q, k, v)]
    scores = split[0] @ split[1].transpose(-1, -2) / math.sqrt(c // heads)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return (scores.softmax(-1) @ split[2]).transpose(1, 2).reshape(n, lq, c)


def self_attn(w, name, x, heads):
    q, k, v = linear(w, f"{name}.qkv", x).chunk(3, dim=-1)
    return linear(w, f"{name}.proj", attention(q, k, v, heads))


def ln(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def reference_forward(w, x, t, y, mask, *, heads=HEADS, space_scale, time_scale=1.0, p=P):
    """Open-Sora 1.0's STDiT on latents x (B, Cin, T, H, W), timesteps t (B,), caption features y (B, L, Ccap)
    with mask (B, L)."""
    B, _, T, H, W = x.shape
    c = w["x_embedder.proj.bias"].shape[0]
    h, wd = H // p, W // p
    S = h * wd
    tok = F.conv3d(x, w["x_embedder.proj.weight"], w["x_embedder.proj.bias"], stride=(1, p, p))  # (B, C, T, h, w)
    tok = tok.flatten(3).permute(0, 2, 3, 1)  # (B, T, S, C), S row-major
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(wd), indexing="ij")
    spatial = torch.cat(
        [sincos(c // 2, cols.flatten() / space_scale), sincos(c // 2, rows.flatten() / space_scale)], dim=1
    )  # fmt: skip  (S, C): columns in the first half, rows in the second
    xs = (tok + spatial).reshape(B, T * S, c)
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    features = torch.cat([(t[:, None] * freqs).cos(), (t[:, None] * freqs).sin()], dim=1)
    temb = linear(w, "t_embedder.mlp.2", F.silu(linear(w, "t_embedder.mlp.0", features)))
    t0 = linear(w, "t_block.1", F.silu(temb)).reshape(B, 6, c)
    text = linear(w, "y_embedder.y_proj.fc2", F.gelu(linear(w, "y_embedder.y_proj.fc1", y), approximate="tanh"))
    tpe = sincos(c, torch.arange(T) / time_scale)  # (T, C)
    for i in range(1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))):
        b = f"blocks.{i}."
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = (w[b + "scale_shift_table"][None] + t0).chunk(6, dim=1)
        hs = (ln(xs) * (1 + sc_a) + sh_a).reshape(B * T, S, c)
        xs = xs + g_a * self_attn(w, b + "attn", hs, heads).reshape(B, T * S, c)
        u = xs.reshape(B, T, S, c).transpose(1, 2).reshape(B * S, T, c)
        u = u + tpe if i == 0 else u
        u = self_attn(w, b + "attn_temp", u, heads).reshape(B, S, T, c).transpose(1, 2).reshape(B, T * S, c)
        xs = xs + g_a * u
        q = linear(w, b + "cross_attn.q_linear", xs)
        k, v = linear(w, b + "cross_attn.kv_linear", text).chunk(2, dim=-1)
        xs = xs + linear(w, b + "cross_attn.proj", attention(q, k, v, heads, mask))
        hidden = F.gelu(linear(w, b + "mlp.fc1", ln(xs) * (1 + sc_m) + sh_m), approximate="tanh")
        xs = xs + g_m * linear(w, b + "mlp.fc2", hidden)
    shift, scale = (w["final_layer.scale_shift_table"][None] + temb[:, None]).chunk(2, dim=1)
    out = linear(w, "final_layer.linear", ln(xs) * (1 + scale) + shift)  # (B, T*S, p*p*Cout)
    cout = out.shape[-1] // (p * p)
    out = out.reshape(B, T, h, wd, p, p, cout).permute(0, 6, 1, 2, 4, 3, 5)
    return out.reshape(B, cout, T, H, W)


# ------------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("frames", [1, 3])
def test_the_imported_model_computes_open_soras_formulas(frames):
    torch.manual_seed(0)
    weights = checkpoint()
    latent = 8
    model = stdit_from_opensora_v1(weights, pixels=latent * 8, num_heads=HEADS).eval()
    x = torch.randn(2, IN, frames, latent, latent)
    t = torch.tensor([999.0, 37.0])
    y = torch.randn(2, TOKENS, CAPTION)
    mask = torch.tensor([[True] * TOKENS, [True] * 3 + [False] * (TOKENS - 3)])
    with torch.no_grad():
        ours = model(x, t, y, encoder_attention_mask=mask).sample
        theirs = reference_forward(weights, x, t, y, mask, space_scale=latent * 8 / 512)
    assert ours.shape == theirs.shape == (2, OUT, frames, latent, latent)
    assert theirs.abs().mean() > 0.1  # the formulas give a signal, not zeros
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


def test_every_key_maps_and_exports_back_bit_for_bit(tmp_path):
    weights = checkpoint(seed=1)
    path = tmp_path / "OpenSora-v1-16x256x256.pth"
    torch.save({"ema": {**weights, "pos_embed": torch.zeros(1, 16, WIDTH)}, "step": torch.tensor(3)}, path)
    model = stdit_from_opensora_v1(path, num_heads=HEADS)  # the release's resolution from its name: 256 px
    assert model.config.sample_size == 32 and model.config.interpolation_scale == 0.5  # space_scale 0.5
    back = to_opensora_v1_state_dict(model)
    assert back.keys() == weights.keys()
    assert all(torch.equal(back[k], weights[k]) for k in weights)
    assert config_from_checkpoint(weights, pixels=512, num_heads=HEADS)["interpolation_scale"] == 1.0
    assert config_from_checkpoint(weights, pixels=512, num_heads=HEADS)["sample_size"] == 64


def test_a_checkpoint_off_the_layout_is_refused_naming_the_tensor(tmp_path):
    weights = checkpoint()
    wrong = {**weights, "blocks.1.mlp.fc1.weight": torch.zeros(3 * WIDTH, WIDTH)}
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc1\.weight has shape \(96, 32\)"):
        stdit_from_opensora_v1(wrong, num_heads=HEADS)
    missing = {k: v for k, v in weights.items() if k != "blocks.1.attn_temp.proj.bias"}
    with pytest.raises(ValueError, match=r"missing \['blocks\.1\.attn_temp\.proj\.bias'\], unexpected \[\]"):
        stdit_from_opensora_v1(missing, num_heads=HEADS)
    extra = {**weights, "blocks.0.norm_temp.weight": torch.zeros(WIDTH)}  # a later version's block
    with pytest.raises(ValueError, match=r"unexpected \['blocks\.0\.norm_temp\.weight'\]"):
        stdit_from_opensora_v1(extra, num_heads=HEADS)
    with pytest.raises(ValueError, match="give num_heads"):
        stdit_from_opensora_v1(weights)  # not the released width: the heads cannot be read from the shapes
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": object()}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):
        stdit_from_opensora_v1(pickled, num_heads=HEADS)
    with pytest.raises(ValueError, match="hf download hpcai-tech/Open-Sora"):
        stdit_from_opensora_v1(tmp_path / "absent.pth")


def test_the_open_sora_branch_is_a_config_option_with_its_own_parameters():
    config = config_from_checkpoint(checkpoint(), num_heads=HEADS)
    v1 = STDiT(**config)
    ours = STDiT(**{**config, "temporal_branch": "modulated", "temporal_position": "rope"})
    extra = set(ours.state_dict()) - set(v1.state_dict())
    assert extra == {f"transformer_blocks.{i}.scale_shift_table_temporal" for i in range(LAYERS)}
    with pytest.raises(ValueError, match="temporal_position='sincos'"):
        STDiT(**{**config, "temporal_position": "rope"})
    with pytest.raises(ValueError, match="only a model with temporal_branch='opensora-v1'"):
        to_opensora_v1_state_dict(ours)


def test_at_another_size_the_position_grid_is_open_soras_patch_index_over_its_scale():
    """Sampled at a size it was not built for (here non-square), the 1.0 model keeps Open-Sora's grid, the patch
    index over space_scale, where diffusers' PatchEmbed would stretch the grid to the built size."""
    torch.manual_seed(0)
    weights = checkpoint()
    model = stdit_from_opensora_v1(weights, pixels=64, num_heads=HEADS).eval()  # built for 8 x 8 latents
    x, t = torch.randn(1, IN, 2, 12, 6), torch.tensor([500.0])
    y, mask = torch.randn(1, TOKENS, CAPTION), torch.ones(1, TOKENS, dtype=torch.bool)
    with torch.no_grad():
        ours = model(x, t, y, encoder_attention_mask=mask).sample
        theirs = reference_forward(weights, x, t, y, mask, space_scale=64 / 512)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


def test_a_dropped_caption_is_the_null_caption_read_under_the_captions_mask():
    """In training as in sampling, Open-Sora 1.0 swaps a dropped caption for the learned null caption and keeps the
    caption's own token mask."""
    torch.manual_seed(0)
    weights = checkpoint()
    model = stdit_from_opensora_v1(weights, pixels=64, num_heads=HEADS).eval()
    x, t, y = torch.randn(1, IN, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, TOKENS, CAPTION)
    mask = torch.tensor([[True] * 3 + [False] * (TOKENS - 3)])
    with torch.no_grad():
        ours = model(x, t, y, encoder_attention_mask=mask, caption_drop_mask=torch.tensor([True])).sample
        null = weights["y_embedder.y_embedding"][None]
        theirs = reference_forward(weights, x, t, null, mask, space_scale=64 / 512)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))
