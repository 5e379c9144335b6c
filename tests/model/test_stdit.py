import pytest
import torch

from model.networks.presets import STDIT_PRESETS, preset_config
from model.networks.stdit import STDiT
from tests.model.helpers import CAPTION_CHANNELS, TEXT_TOKENS, inputs, randomize, tiny_stdit


@pytest.mark.parametrize("frames", [1, 4])
@pytest.mark.parametrize("size", [(8, 8), (6, 12)])
@pytest.mark.parametrize("mode", ["spatial_temporal", "full"])
def test_output_shape_images_and_videos(frames, size, mode):
    model = randomize(tiny_stdit(attention_mode=mode, out_channels=8)).eval()
    x, t, text = inputs(frames=frames, height=size[0], width=size[1])
    with torch.no_grad():
        out = model(x, t, text).sample
    assert out.shape == (2, 8, frames, *size)
    assert torch.isfinite(out).all()


def test_same_seed_same_model_and_output():
    x, t, text = inputs()
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        model = tiny_stdit()
        with torch.no_grad():
            model.proj_out.weight.normal_()  # fresh models predict exactly zero
            outs.append(model(x, t, text).sample)
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


@pytest.mark.parametrize("mode", ["spatial_temporal", "full"])
def test_save_pretrained_round_trip(tmp_path, mode):
    model = randomize(tiny_stdit(attention_mode=mode, qk_norm=True, temporal_position="rope+sincos")).eval()
    model.save_pretrained(tmp_path)
    loaded = STDiT.from_pretrained(tmp_path).eval()
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    x, t, text = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, text).sample, loaded(x, t, text).sample)


def _perturb_frame(x, frame):
    y = x.clone()
    y[:, :, frame] += torch.randn_like(y[:, :, frame])
    return y


@pytest.mark.parametrize("position", ["rope", "sincos", "rope+sincos"])
def test_temporal_attention_is_the_only_path_between_frames(position):
    model = randomize(tiny_stdit(temporal_position=position)).eval()
    x, t, text = inputs(frames=4)
    y = _perturb_frame(x, 2)
    others = [0, 1, 3]

    model.zero_temporal_output()
    with torch.no_grad():
        a, b = model(x, t, text).sample, model(y, t, text).sample
    assert (a[:, :, others] - b[:, :, others]).abs().max() < 1e-6
    assert (a[:, :, 2] - b[:, :, 2]).abs().max() > 1e-2

    randomize(model, seed=1)
    with torch.no_grad():
        a, b = model(x, t, text).sample, model(y, t, text).sample
    for f in others:
        assert (a[:, :, f] - b[:, :, f]).abs().max() > 1e-3


def test_full_attention_mixes_frames_and_equals_stdit_on_images():
    stdit = randomize(tiny_stdit()).eval()
    full = tiny_stdit(attention_mode="full").eval()
    missing, unexpected = full.load_state_dict(stdit.state_dict(), strict=False)
    assert not missing and all(".attn_temp." in k or "temporal" in k for k in unexpected)
    x, t, text = inputs(frames=1)
    with torch.no_grad():
        assert (stdit(x, t, text).sample - full(x, t, text).sample).abs().max() < 1e-5
        video, _, _ = inputs(frames=3)
        a, b = full(video, t, text).sample, full(_perturb_frame(video, 0), t, text).sample
    assert (a[:, :, 2] - b[:, :, 2]).abs().max() > 1e-3


def test_images_give_no_gradient_to_temporal_weights():
    model = randomize(tiny_stdit()).train()
    x, t, text = inputs(frames=1)
    model(x, t, text).sample.square().mean().backward()
    temporal = model.temporal_parameters()
    assert temporal, "the model has temporal parameters"
    assert all(p.grad is None for _, p in temporal)
    spatial = [p for n, p in model.named_parameters() if n not in dict(temporal) and n != "y_embedding"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in spatial)


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t, text = inputs(frames=3)
    grads = []
    for checkpointing in (False, True):
        model = randomize(tiny_stdit()).train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(x, t, text).sample.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_dropped_captions_ignore_the_text(model):
    x, t, text = inputs()
    drop = torch.tensor([True, False])
    other_text = torch.randn_like(text)
    with torch.no_grad():
        a = model(x, t, text, caption_drop_mask=drop).sample
        b = model(x, t, other_text, caption_drop_mask=drop).sample
    assert torch.equal(a[0], b[0])
    assert not torch.allclose(a[1], b[1])


def test_a_batch_that_drops_no_caption_still_reaches_the_null_caption_and_predicts_as_without_a_mask():
    """Every data-parallel rank's backward reaches the learned null caption, a zero gradient where its batch drops
    none (ZeRO-2 reduces gradient buckets of one size on every rank: a parameter with a gradient on one rank only
    is a collective of mismatched sizes); and an all-False drop mask predicts exactly what no mask does."""
    model = randomize(tiny_stdit(caption_max_length=8)).train()
    x, t, text = inputs()
    kept = model(x, t, text, caption_drop_mask=torch.tensor([False, False])).sample
    kept.square().mean().backward()
    assert model.y_embedding.grad is not None and not model.y_embedding.grad.any()
    with torch.no_grad():
        assert torch.equal(kept, model(x, t, text).sample)


def test_the_unconditional_prediction_does_not_depend_on_the_batchs_padding():
    """A dropped caption is the whole learned null caption: the same whether the batch's captions were padded to 3
    tokens or 7, and the same as the unconditional half of sampling."""
    model = randomize(tiny_stdit(caption_max_length=8)).eval()
    x, t, _ = inputs(batch=1)
    drop = torch.tensor([True])
    with torch.no_grad():
        short = model(x, t, torch.randn(1, 3, CAPTION_CHANNELS), torch.ones(1, 3, dtype=torch.bool), drop).sample
        long = model(x, t, torch.randn(1, 7, CAPTION_CHANNELS), torch.ones(1, 7, dtype=torch.bool), drop).sample
    assert torch.allclose(short, long, atol=1e-6)


def test_text_mask_hides_padding(model):
    x, t, text = inputs()
    mask = torch.ones(2, TEXT_TOKENS, dtype=torch.bool)
    mask[:, 3:] = False
    padded = text.clone()
    padded[:, 3:] = torch.randn(2, TEXT_TOKENS - 3, CAPTION_CHANNELS)
    with torch.no_grad():
        a = model(x, t, text, encoder_attention_mask=mask).sample
        b = model(x, t, padded, encoder_attention_mask=mask).sample
    assert torch.allclose(a, b, atol=1e-6)


def test_bad_inputs_name_the_fix(model):
    x, t, text = inputs(height=7, width=8)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        model(x, t, text)
    x, t, _ = inputs()
    with pytest.raises(ValueError, match="caption_max_length"):
        model(x, t, torch.randn(2, TEXT_TOKENS + 1, CAPTION_CHANNELS))
    with pytest.raises(ValueError, match="unknown model preset"):
        preset_config("XXL/2")
    with pytest.raises(ValueError, match="attention_mode"):
        tiny_stdit(attention_mode="joint")


def test_presets_are_data():
    assert set(STDIT_PRESETS) >= {"tiny", "S/2", "B/2", "XL/2"}
    xl = preset_config("XL/2")
    assert xl["num_attention_heads"] * xl["attention_head_dim"] == 1152 and xl["num_layers"] == 28


def test_xl2_counts_match_open_sora_stdit():
    """Open-Sora 1.0's STDiT-XL/2 (T5-XXL 4096 channels, 120 tokens, learned sigma) counts 759.6M parameters:
    610.9M in its PixArt part and 148.8M in temporal attention."""
    config = preset_config("XL/2", in_channels=4, out_channels=8, caption_channels=4096, caption_max_length=120)
    with torch.device("meta"):
        model = STDiT(**config)
    total = sum(p.numel() for p in model.parameters())
    temporal_attention = sum(p.numel() for n, p in model.named_parameters() if ".attn_temp." in n)
    spatial = total - sum(p.numel() for _, p in model.temporal_parameters())
    null_caption = model.y_embedding.numel()  # learned here; a fixed buffer in Open-Sora
    assert abs(total - 759.6e6) / 759.6e6 < 0.01
    assert abs(spatial - null_caption - 610.9e6) < 0.1e6
    assert abs(temporal_attention - 148.8e6) < 0.1e6


@pytest.mark.gpu
def test_bf16_training_step_on_cuda():
    model = randomize(tiny_stdit(qk_norm=True), std=0.05).cuda().to(torch.bfloat16).train()
    model.enable_gradient_checkpointing()
    x, t, text = (a.cuda() for a in inputs(frames=4))
    out = model(x.bfloat16(), t, text.bfloat16()).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_frame_embedding_starts_frame_wise_and_then_tells_frames_apart():
    """A zero projection at the start: the video model is the image model frame by frame; once trained (random
    weights here) identical frames come out different, since every token knows its frame's index."""
    model = tiny_stdit(frame_embedding=True)
    assert "frame_embedder.weight" in dict(model.temporal_parameters())
    randomize(model)
    model.zero_temporal_output()
    x, t, text = inputs(frames=1)
    video = x.expand(-1, -1, 4, -1, -1).contiguous()
    with torch.no_grad():
        image = model(x, t, text).sample
        frames = model(video, t, text).sample
    for f in range(4):
        assert (frames[:, :, f] - image[:, :, 0]).abs().max() < 1e-5

    randomize(model, seed=1)
    with torch.no_grad():
        frames = model(video, t, text).sample
        without = tiny_stdit(frame_embedding=False)
        without.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("frame_embedder")})
        same = without(video, t, text).sample
    assert (frames[:, :, 0] - frames[:, :, 3]).abs().max() > 1e-2
    assert (frames - same).abs().max() > 1e-2


@pytest.mark.parametrize("caption_channels, width", [(16, 64), (32, 64), (4096, 1152)])
def test_the_prompt_reaches_a_fresh_model_at_full_strength(caption_channels, width):
    """The caption projection is scaled by the text encoder's width: unit tokens come out at order one for a small
    encoder, and at PixArt's N(0, 0.02) weights for T5-XXL into 1152 channels."""
    torch.manual_seed(0)
    model = STDiT(**preset_config("tiny", num_attention_heads=width // 16, in_channels=4, sample_size=8,
                                  caption_channels=caption_channels, caption_max_length=4))  # fmt: skip
    w1 = model.caption_projection.linear_1.weight.detach()
    if caption_channels == 4096:
        assert abs(float(w1.std()) - 0.02) < 0.002
    with torch.no_grad():
        tokens = model.caption_projection(torch.randn(8, 4, caption_channels))
    assert 0.1 < float(tokens.std()) < 3.0
    assert float(model.transformer_blocks[0].attn2.to_out[0].weight.detach().abs().sum()) > 0


def test_a_dtype_cast_warns_only_of_modules_really_kept_in_float32():
    import logging

    from diffusers.models.modeling_utils import ModelMixin

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logger, collect = logging.getLogger(ModelMixin.__module__), Collect()
    logger.addHandler(collect)
    try:
        model = tiny_stdit().to(torch.bfloat16)
        assert model.dtype == torch.bfloat16
        assert not [m for m in collect.messages if "float32" in m], collect.messages  # STDiT keeps none in fp32
        logger.warning("There are modules in X that should be kept in float32: ['norm']. Casting ...")
        assert collect.messages == ["There are modules in X that should be kept in float32: ['norm']. Casting ..."]
    finally:
        logger.removeHandler(collect)
