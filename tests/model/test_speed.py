"""What makes the training step fast changes nothing it computes: fused projections (and either layout of
weights loading into either model), regional compilation with its eager fall-back, and partial recompute."""

import copy
import logging

import pytest
import torch

from model.networks.attention import attention_modules, convert_layout
from model.networks.stdit import STDiT
from model.weights.pixart import stdit_from_pixart
from tests.model.helpers import inputs, randomize, tiny_stdit
from tests.model.test_pixart_import import tiny_pixart


def fused_keys(model: STDiT, state: dict) -> dict:
    """`state` with its attention projections in the fused layout."""
    state = dict(state)
    convert_layout(state, {p: (True, a.is_cross_attention) for p, a in attention_modules(model).items()})
    return state


def loss_and_grads(model: STDiT, frames: int = 3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and the gradient of every weight (zero where none flowed), named as in the state dict."""
    model.zero_grad(set_to_none=True)
    x, t, text = inputs(frames=frames)
    out = model(x, t, text).sample
    out.pow(2).mean().backward()
    grads = {n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in model.named_parameters()}
    convert_layout(grads, {p: (False, a.is_cross_attention) for p, a in attention_modules(model).items()})
    return out.detach(), grads


@pytest.mark.parametrize("frames", [1, 3])
def test_fused_projections_compute_what_separate_ones_do(frames):
    separate = randomize(tiny_stdit(qk_norm=True))
    fused = copy.deepcopy(separate).fuse_projections()
    assert fused.projections_fused and not separate.projections_fused
    names = {n for n, _ in fused.named_parameters()}
    assert any(n.endswith("attn1.to_qkv.weight") for n in names) and any(
        n.endswith("attn2.to_kv.weight") for n in names
    )
    assert not any(n.endswith(("attn1.to_q.weight", "attn2.to_k.weight")) for n in names)
    out_s, grads_s = loss_and_grads(separate, frames)
    out_f, grads_f = loss_and_grads(fused, frames)
    assert torch.allclose(out_s, out_f, atol=1e-6)
    assert grads_s.keys() == grads_f.keys()
    for name, g in grads_s.items():
        assert torch.allclose(g, grads_f[name], atol=1e-6), name
    # the state dict keeps the separate layout, and splitting gives the model back
    assert separate.state_dict().keys() == fused.state_dict().keys()
    assert all(torch.equal(v, fused.state_dict()[k]) for k, v in separate.state_dict().items())
    back = copy.deepcopy(fused).split_projections()
    assert not back.projections_fused and torch.equal(back(*inputs(frames=frames)).sample, out_s)
    # the parameters keep the layout's order (the optimizer's state is matched to them by position)
    assert [n for n, _ in back.named_parameters()] == [n for n, _ in separate.named_parameters()]
    names = [n for n, _ in fused.named_parameters()]
    assert names.index("transformer_blocks.0.attn1.to_qkv.weight") < names.index(
        "transformer_blocks.0.attn1.to_out.0.weight"
    )


@pytest.mark.parametrize("saved_fused", [False, True], ids=["separate-file", "fused-file"])
@pytest.mark.parametrize("model_fused", [False, True], ids=["separate-model", "fused-model"])
def test_either_layout_loads_into_either_model(tmp_path, saved_fused, model_fused):
    from safetensors.torch import save_file

    source = randomize(tiny_stdit())
    expected = source(*inputs()).sample
    state = fused_keys(source, source.state_dict()) if saved_fused else source.state_dict()
    source.save_pretrained(tmp_path)  # config.json
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "diffusion_pytorch_model.safetensors")
    loaded = STDiT.from_pretrained(tmp_path)  # diffusers' loading path
    if model_fused:
        loaded.fuse_projections()
    assert torch.equal(loaded(*inputs()).sample, expected)
    direct = tiny_stdit()  # torch's load_state_dict path (checkpoints, the EMA)
    if model_fused:
        direct.fuse_projections()
    direct.load_state_dict(state)
    assert torch.equal(direct(*inputs()).sample, expected)


@pytest.mark.parametrize("layout", ["separate", "fused"])
def test_pixart_weights_of_either_layout_load_into_a_fused_stdit(tmp_path, layout):
    torch.manual_seed(0)
    pixart = randomize(tiny_pixart(), std=0.1).eval()
    pixart.save_pretrained(tmp_path)
    reference = stdit_from_pixart(tmp_path).eval()
    fused = STDiT.from_config(reference.config).fuse_projections().eval()
    state = pixart.state_dict()
    if layout == "fused":
        state = fused_keys(fused, state)
        assert any(k.endswith("attn1.to_qkv.weight") for k in state)
    missing, unexpected = fused.load_state_dict(state, strict=False)
    assert not unexpected and all(".attn_temp." in k or "temporal" in k or k == "y_embedding" for k in missing)
    new = {k: v for k, v in reference.state_dict().items() if k in missing}  # what PixArt does not have
    assert not fused.load_state_dict(new, strict=False).unexpected_keys
    x = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    text = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([10.0, 700.0])
    with torch.no_grad():
        assert torch.allclose(fused(x, t, text).sample, reference(x, t, text).sample, atol=1e-6)


def test_a_compiled_stdit_equals_eager_in_outputs_and_gradients():
    """Regional compilation (inductor) under gradient checkpointing of the first block only: both paths of the loop."""
    eager = randomize(tiny_stdit()).fuse_projections()
    compiled = copy.deepcopy(eager).compile_blocks()
    for model in (eager, compiled):
        model.enable_gradient_checkpointing()
        model.recompute_blocks = 1
    out_e, grads_e = loss_and_grads(eager)
    out_c, grads_c = loss_and_grads(compiled)
    assert compiled.compiled == "inductor"  # still compiled: no fall-back happened
    assert torch.allclose(out_e, out_c, atol=1e-5, rtol=1e-4)
    for name, g in grads_e.items():
        assert torch.allclose(g, grads_c[name], atol=1e-5, rtol=1e-4), name
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # compiling renames nothing


def test_a_compiler_that_fails_falls_back_to_eager_with_a_warning(caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("planted compiler failure")

    eager = randomize(tiny_stdit())
    model = copy.deepcopy(eager).compile_blocks(backend=broken_backend)
    with caplog.at_level(logging.WARNING, logger="model.compile"):
        out = model(*inputs()).sample
    assert model.compiled is None and torch.equal(out, eager(*inputs()).sample)
    assert "planted compiler failure" in caplog.text and "model.compile=false" in caplog.text
    with pytest.raises(ValueError, match="divisible by patch_size"):  # the call's own errors are not swallowed
        model(torch.randn(1, 4, 1, 7, 8), torch.zeros(1), torch.randn(1, 6, 16))


def test_recomputing_some_blocks_gives_the_same_gradients():
    reference = randomize(tiny_stdit(num_layers=3))
    _, grads = loss_and_grads(reference)
    for n in (0, 1, 3):
        model = copy.deepcopy(reference)
        model.enable_gradient_checkpointing()
        model.recompute_blocks = n
        _, got = loss_and_grads(model)
        assert all(torch.allclose(g, got[k], atol=1e-6) for k, g in grads.items()), n
