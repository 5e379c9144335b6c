"""T2VPipeline as diffusers users call it, checked the way diffusers' common pipeline tests check a pipeline, on
tiny components: a random STDiT, a 2-layer T5 and the exact pixel-space patch autoencoder ("none:2")."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from components.common.toy.tiny import build_tiny_t5, build_tiny_vae
from model.inference.folder import write_encoder
from model.inference.loading import load_pipeline
from model.inference.pipeline import T2VPipeline, T2VPipelineOutput, assemble_pipeline
from tests.model.helpers import randomize, tiny_stdit

SHAPE = {"num_frames": 3, "height": 16, "width": 16}  # latents (12, 3, 8, 8) through the 2x patch autoencoder
RUN = {**SHAPE, "num_inference_steps": 2}
PROMPTS = ["a red circle moves left", "a blue square"]


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    return build_tiny_t5(tmp_path_factory.mktemp("t5") / "t5")


@pytest.fixture(scope="module")
def pipe(t5):
    model = randomize(tiny_stdit(in_channels=12, caption_channels=32, caption_max_length=16), std=0.05)
    return quiet(assemble_pipeline(model, "none:2", str(t5), 16, sample_shape=(3, 16, 16)))


def test_the_encoders_are_components(pipe):
    assert sorted(pipe.components) == ["scheduler", "text_encoder", "tokenizer", "transformer", "vae"]
    assert type(pipe.vae).__name__ == "PatchAutoencoder" and type(pipe.text_encoder).__name__ == "T5EncoderModel"


def test_save_and_reload_give_identical_frames(pipe, tmp_path):
    expected = pipe(PROMPTS, generator=seeded(), **RUN).frames
    pipe.save_pretrained(tmp_path / "referenced")
    pipe.save_pretrained(tmp_path / "written", write_encoders=True)
    index = json.loads((tmp_path / "referenced" / "model_index.json").read_text())
    assert index["_class_name"] == ["t2v_pipeline", "T2VPipeline"] and index["vae_spec"] == "none:2"
    assert index["text_encoder"] == [None, None] and index["text_encoder_spec"] == pipe.config.text_encoder_spec
    names = ["model_index.json", "scheduler", "t2v_pipeline.py", "transformer"]
    assert sorted(p.name for p in (tmp_path / "referenced").iterdir()) == names
    written = json.loads((tmp_path / "written" / "model_index.json").read_text())
    assert written["text_encoder"] == ["transformers", "T5EncoderModel"] and written["text_encoder_spec"] is None
    assert written["vae"] == ["model.weights.encoders", "PatchAutoencoder"]
    for name in ("referenced", "written"):
        loaded = DiffusionPipeline.from_pretrained(tmp_path / name, trust_remote_code=True)
        assert type(loaded) is T2VPipeline and loaded.folder == tmp_path / name
        assert np.array_equal(quiet(loaded)(PROMPTS, generator=seeded(), **RUN).frames, expected)
    # a folder that holds its encoders saves them again: it is their only source
    loaded.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "text_encoder" / "config.json").is_file()


def test_a_referenced_encoder_can_be_written_into_the_folder_later(pipe, tmp_path):
    expected = pipe(PROMPTS[0], generator=seeded(), **RUN).frames
    pipe.save_pretrained(tmp_path / "pipe")
    write_encoder(tmp_path / "pipe", "text_encoder")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["text_encoder_spec"] is None and index["tokenizer"][0] == "transformers"
    assert np.array_equal(
        quiet(load_pipeline(tmp_path / "pipe"))(PROMPTS[0], generator=seeded(), **RUN).frames, expected
    )


def test_a_batch_of_prompts_gives_the_videos_of_each_prompt_alone(pipe):
    batch = pipe(PROMPTS, generator=[seeded(0), seeded(1)], **RUN).frames
    alone = [pipe(p, generator=seeded(i), **RUN).frames[0] for i, p in enumerate(PROMPTS)]
    assert np.abs(batch[0] - alone[0]).max() < 1e-4 and np.abs(batch[1] - alone[1]).max() < 1e-4
    assert np.abs(batch[0] - batch[1]).max() > 0.05


def test_num_videos_per_prompt_repeats_each_prompt_with_its_own_noise(pipe):
    for prompts, n in (("a red circle", 1), ("a red circle", 3), (PROMPTS, 1), (PROMPTS, 2)):
        frames = pipe(prompts, num_videos_per_prompt=n, generator=seeded(), **RUN).frames
        count = (1 if isinstance(prompts, str) else len(prompts)) * n
        assert frames.shape == (count, 3, 16, 16, 3)
    assert np.abs(frames[0] - frames[1]).max() > 0.05  # two videos of one prompt
    embeds = pipe.encode_prompt(PROMPTS, num_videos_per_prompt=2)[0]
    assert torch.equal(embeds[0], embeds[1]) and not torch.equal(embeds[1], embeds[2])  # in the order of the prompts


def test_every_output_type(pipe):
    run = lambda kind, **kw: pipe(PROMPTS, generator=seeded(), output_type=kind, **RUN, **kw)  # noqa: E731
    np_frames = run("np").frames
    assert np_frames.shape == (2, 3, 16, 16, 3) and np_frames.dtype == np.float32
    assert np_frames.min() >= 0 and np_frames.max() <= 1 and np_frames.std() > 0.05
    pt = run("pt").frames
    assert pt.shape == (2, 3, 3, 16, 16) and np.allclose(pt.permute(0, 1, 3, 4, 2).numpy(), np_frames)
    pil = run("pil").frames
    assert len(pil) == 2 and len(pil[0]) == 3 and pil[0][0].size == (16, 16)
    assert np.abs(np.asarray(pil[1][2]) / 255 - np_frames[1, 2]).max() <= 1 / 255 + 1e-6
    latents = run("latent").frames
    assert latents.shape == (2, 12, 3, 8, 8)
    # the pixel-space autoencoder is exact: the latents are the video, rescaled from [-1, 1]
    decoded = pipe.vae.decode(latents).permute(0, 2, 3, 4, 1).clamp(-1, 1).numpy() / 2 + 0.5
    assert np.allclose(decoded, np_frames, atol=1e-6)
    output = run("np", return_dict=False)
    assert isinstance(output, tuple) and np.array_equal(output[0], np_frames)
    assert isinstance(run("np"), T2VPipelineOutput)
    with pytest.raises(ValueError, match="output_type"):
        run("mp4")


def test_latents_reproduce_a_run(pipe):
    expected = pipe(PROMPTS, generator=seeded(3), **RUN).frames
    noise = randn_tensor((2, 12, 3, 8, 8), generator=seeded(3))
    assert np.array_equal(pipe(PROMPTS, latents=noise.clone(), **RUN).frames, expected)
    assert np.abs(pipe(PROMPTS, latents=noise.flip(0), **RUN).frames - expected).max() > 0.05
    with pytest.raises(ValueError, match="latents of shape"):
        pipe(PROMPTS, latents=noise[:1], **RUN)


def test_prompt_embeds_give_the_videos_of_their_prompts(pipe):
    expected = pipe(PROMPTS, negative_prompt="green", generator=seeded(), **RUN).frames
    embeds, mask, negative, negative_mask = pipe.encode_prompt(PROMPTS, "green")
    frames = pipe(
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt_embeds=negative,
        negative_prompt_attention_mask=negative_mask,
        generator=seeded(),
        **RUN,
    ).frames
    assert np.array_equal(frames, expected)
    with pytest.raises(ValueError, match="either prompt or prompt_embeds"):
        pipe(PROMPTS, prompt_embeds=embeds, **RUN)


def test_callback_on_step_end_sees_every_step_and_can_change_the_latents(pipe):
    seen = []

    def record(p, step, t, tensors):
        seen.append((step, float(t), sorted(tensors), tuple(tensors["prompt_embeds"].shape)))
        return {}

    steps = {**RUN, "num_inference_steps": 3}
    names = ["latents", "prompt_embeds"]
    pipe(PROMPTS, generator=seeded(), callback_on_step_end=record, callback_on_step_end_tensor_inputs=names, **steps)
    assert [s[0] for s in seen] == [0, 1, 2] and [s[1] for s in seen] == pipe.scheduler.timesteps.tolist()
    assert all(s[2] == names and s[3][0] == 2 for s in seen)

    def to_grey(p, step, t, tensors):  # the last step's latents replaced: the video is mid-grey
        return {"latents": torch.zeros_like(tensors["latents"])} if step == p.num_timesteps - 1 else {}

    frames = pipe(PROMPTS, generator=seeded(), callback_on_step_end=to_grey, **steps).frames
    assert np.allclose(frames, 0.5)
    with pytest.raises(ValueError, match="callback tensors"):
        pipe(PROMPTS, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["noise"], **steps)


def test_the_negative_prompt_changes_the_result(pipe):
    plain = pipe(PROMPTS, generator=seeded(), **RUN).frames
    negative = pipe(PROMPTS, negative_prompt="green triangle", generator=seeded(), **RUN).frames
    per_prompt = pipe(PROMPTS, negative_prompt=["green triangle", "green triangle"], generator=seeded(), **RUN).frames
    assert np.abs(plain - negative).max() > 0.01 and np.array_equal(negative, per_prompt)  # float noise: 1e-6
    # without guidance there is no unconditional branch for it to change
    unguided = {**RUN, "guidance_scale": 1.0}
    a = pipe(PROMPTS, generator=seeded(), **unguided).frames
    assert np.array_equal(a, pipe(PROMPTS, negative_prompt="green triangle", generator=seeded(), **unguided).frames)
    with pytest.raises(ValueError, match="1 negative prompts for 2 prompts"):
        pipe(PROMPTS, negative_prompt=["green"], **RUN)


def test_model_cpu_offload_gives_the_same_frames(t5, tmp_path):
    """The offload hooks on CPU (the accelerator version below): each model is moved in by its hook when called."""
    model = randomize(tiny_stdit(in_channels=12, caption_channels=32, caption_max_length=16), std=0.05)
    pipe = quiet(assemble_pipeline(model, "none:2", str(t5), 16, sample_shape=(3, 16, 16)))
    expected = pipe(PROMPTS, generator=seeded(), **RUN).frames
    pipe.enable_model_cpu_offload(device="cpu")
    assert len(pipe._all_hooks) == 3
    assert all(hasattr(getattr(pipe, n), "_hf_hook") for n in ("text_encoder", "transformer", "vae"))
    assert np.array_equal(pipe(PROMPTS, generator=seeded(), **RUN).frames, expected)


@pytest.mark.gpu
def test_model_cpu_offload_on_the_accelerator_gives_the_frames_of_a_cpu_run(t5):
    model = randomize(tiny_stdit(in_channels=12, caption_channels=32, caption_max_length=16), std=0.05)
    pipe = quiet(assemble_pipeline(model, "none:2", str(t5), 16, sample_shape=(3, 16, 16)))
    expected = pipe(PROMPTS, generator=seeded(), **RUN).frames
    pipe.enable_model_cpu_offload()
    frames = pipe(PROMPTS, generator=seeded(), **RUN).frames
    assert pipe.transformer.device.type == "cpu" and np.abs(frames - expected).max() < 1e-3


def test_bf16_sampling_runs_and_is_close_to_fp32(t5):
    model = randomize(tiny_stdit(in_channels=12, caption_channels=32, caption_max_length=16), std=0.05)
    pipe = quiet(assemble_pipeline(model, "none:2", str(t5), 16, sample_shape=(3, 16, 16)))
    expected = pipe(PROMPTS, generator=seeded(), **RUN).frames
    pipe.to(torch.bfloat16)
    assert pipe.transformer.dtype == pipe.text_encoder.dtype == torch.bfloat16
    frames = pipe(PROMPTS, generator=seeded(), **RUN).frames
    difference = np.abs(frames - expected)
    logging.getLogger(__name__).info("bf16 vs fp32: max %.4f, mean %.5f", difference.max(), difference.mean())
    assert difference.max() < 0.05 and difference.mean() < 0.01 and difference.max() > 0  # bf16 did run


def test_export_to_video_writes_a_playable_file_from_the_first_video(pipe, tmp_path):
    import av
    from diffusers.utils import export_to_video

    ramp = torch.linspace(-0.8, 0.8, 16).view(1, 1, 1, 1, 16) * torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1, 1)
    video = ramp.expand(1, 3, 3, 16, 16)  # a picture the codec keeps, unlike the tiny model's random pixels

    def smooth(p, step, t, tensors):
        return {"latents": p.vae.encode(video)} if step == p.num_timesteps - 1 else {}

    frames = pipe(PROMPTS[0], generator=seeded(), callback_on_step_end=smooth, **RUN).frames
    path = export_to_video(frames[0], str(tmp_path / "video.mp4"), fps=8)
    with av.open(path) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 3 and decoded[0].shape == (16, 16, 3)
    assert np.abs(np.stack(decoded) / 255 - frames[0]).mean() < 0.03  # lossy, but the picture is the generated one


def test_a_diffusers_vae_is_written_and_reloaded(t5, tmp_path):
    vae = build_tiny_vae(tmp_path / "vae")
    model = randomize(tiny_stdit(in_channels=4, caption_channels=32, caption_max_length=16), std=0.05)
    pipe = quiet(assemble_pipeline(model, str(vae), str(t5), 16, sample_shape=(2, 32, 32)))
    expected = pipe(PROMPTS[0], generator=seeded(), num_inference_steps=2).frames
    assert expected.shape == (1, 2, 32, 32, 3)
    pipe.save_pretrained(tmp_path / "pipe", write_encoders=True)
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"] and index["vae_spec"] is None
    frames = quiet(load_pipeline(tmp_path / "pipe"))(PROMPTS[0], generator=seeded(), num_inference_steps=2).frames
    assert np.array_equal(frames, expected)
    with pytest.raises(ValueError, match="multiples of 16"):
        pipe(PROMPTS[0], num_frames=1, height=24, width=32)


def test_the_trained_shape_and_flow_settings_travel_with_the_folder(t5, tmp_path):
    from model.schedulers.config import FlowConfig

    model = randomize(tiny_stdit(in_channels=48, caption_channels=32, caption_max_length=16), std=0.05)
    flow = FlowConfig(shift=2.0, spatial_compression=4)
    unloaded = assemble_pipeline(model, "none:4", str(t5), 16, flow, sample_shape=(3, 32, 48), load_encoders=False)
    assert unloaded.text_encoder is None  # a pipeline to save only: its encoders stay references
    unloaded.save_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match="not loaded"):
        unloaded.save_pretrained(tmp_path / "other", write_encoders=True)
    pipe = quiet(load_pipeline(tmp_path / "pipe"))
    assert pipe.flow_config() == flow and pipe.config.max_text_tokens == 16
    assert pipe("a red circle", num_inference_steps=2).frames.shape == (1, 3, 32, 48, 3)


def test_a_folder_in_the_earlier_format_still_loads(pipe, tmp_path, caplog):
    """Before the encoders were components: no code file, `_class_name` a string, a bundled encoder referenced by a
    path inside the folder."""
    expected = pipe(PROMPTS[0], generator=seeded(), **RUN).frames
    old = tmp_path / "old"
    pipe.save_pretrained(old)
    (old / "t2v_pipeline.py").unlink()
    shutil.copytree(pipe.config.text_encoder_spec, old / "encoders" / "text_encoder")
    index = json.loads((old / "model_index.json").read_text())
    for name in ("vae", "text_encoder", "tokenizer"):
        del index[name]
    index.update(_class_name="T2VPipeline", text_encoder_spec="encoders/text_encoder")
    (old / "model_index.json").write_text(json.dumps(index))
    with caplog.at_level(logging.WARNING, logger="model.inference.loading"):
        loaded = quiet(load_pipeline(old))
    assert "earlier pipeline format" in caplog.text and "save_pretrained" in caplog.text
    assert loaded.config.text_encoder_spec is None and loaded.config.vae_spec == "none:2"
    assert np.array_equal(loaded(PROMPTS[0], generator=seeded(), **RUN).frames, expected)
    loaded.save_pretrained(tmp_path / "new")  # re-saved, the bundled encoder is written into the new folder
    assert (tmp_path / "new" / "text_encoder" / "config.json").is_file()
    resaved = quiet(DiffusionPipeline.from_pretrained(tmp_path / "new", trust_remote_code=True))
    assert np.array_equal(resaved(PROMPTS[0], generator=seeded(), **RUN).frames, expected)


def test_a_folder_saved_before_model_was_split_by_concern_still_loads(pipe, tmp_path, caplog):
    """Folders (registered versions among them) saved when the classes lived in model.stdit and model.encoders and the
    code file imported model.pipeline load unchanged, through a view naming today's modules."""
    expected = pipe(PROMPTS[0], generator=seeded(), **RUN).frames
    pipe.save_pretrained(tmp_path / "old", write_encoders=True)
    index = json.loads((tmp_path / "old" / "model_index.json").read_text())
    assert index["transformer"] == ["model.networks.stdit", "STDiT"]
    index.update(transformer=["model.stdit", "STDiT"], vae=["model.encoders", index["vae"][1]])
    (tmp_path / "old" / "model_index.json").write_text(json.dumps(index))
    code = tmp_path / "old" / "t2v_pipeline.py"
    code.write_text(code.read_text().replace("model.inference.pipeline", "model.pipeline"))
    before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "old").iterdir() if p.is_file())
    with caplog.at_level(logging.WARNING, logger="model.inference.loading"):
        loaded = quiet(load_pipeline(tmp_path / "old"))
    assert "earlier layout" in caplog.text and "save_pretrained" in caplog.text
    assert np.array_equal(loaded(PROMPTS[0], generator=seeded(), **RUN).frames, expected)
    assert sorted((p.name, p.read_bytes()) for p in (tmp_path / "old").iterdir() if p.is_file()) == before


def test_only_the_code_file_save_pretrained_writes_is_trusted(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "pipe" / "t2v_pipeline.py").write_text("import os\nfrom model.inference.pipeline import T2VPipeline\n")
    with pytest.raises(ValueError, match="not the code file"):
        load_pipeline(tmp_path / "pipe")
    with pytest.raises(ValueError, match="trust_remote_code"):
        T2VPipeline.from_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match=r"no model_index\.json"):
        load_pipeline(tmp_path)


def test_prompts_are_cleaned_up_like_the_training_captions(pipe):
    """Training captions are cleaned (boilerplate opening dropped, first letter capitalised); a prompt is cleaned
    the same way before encoding, and the toy tokenizer ignores case, so the first three prompts are one text."""
    ids = [pipe.tokenizer(p).input_ids for p in ("A red circle", "a red circle")]
    assert ids[0] == ids[1] and pipe.tokenizer.unk_token_id not in ids[0]
    videos = [
        pipe(p, generator=seeded(), **RUN).frames[0]
        for p in ("The video shows a red circle", "a red circle", "A red circle", "a blue square")
    ]
    assert np.array_equal(videos[0], videos[1]) and np.array_equal(videos[1], videos[2])
    assert not np.array_equal(videos[2], videos[3])
