import json

import pytest
import torch

from components.common.toy.tiny import build_tiny_t5
from model.pipeline import T2VPipeline, build_pipeline
from tests.model.helpers import randomize, tiny_stdit


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    t5 = build_tiny_t5(root / "t5")
    model = randomize(tiny_stdit(in_channels=48, caption_channels=32, caption_max_length=16), std=0.05)
    build_pipeline(model, "none:4", str(t5), 16).save_pretrained(root / "pipe")
    return root / "pipe"


def test_the_folder_references_the_encoders_instead_of_copying_them(pipeline_dir):
    index = json.loads((pipeline_dir / "model_index.json").read_text())
    assert index["transformer"] == ["model.stdit", "STDiT"] and index["vae_spec"] == "none:4"
    assert sorted(p.name for p in pipeline_dir.iterdir()) == ["model_index.json", "scheduler", "transformer"]


def test_from_pretrained_generates_deterministic_videos(pipeline_dir):
    pipe = T2VPipeline.from_pretrained(pipeline_dir)
    kwargs = dict(num_frames=3, height=32, width=48, num_inference_steps=3, progress=False)
    a = pipe(["a red circle", "a blue square"], generator=torch.Generator().manual_seed(0), **kwargs)
    b = pipe(["a red circle", "a blue square"], generator=torch.Generator().manual_seed(0), **kwargs)
    assert len(a) == 2 and a[0].shape == (3, 32, 48, 3) and a[0].dtype.name == "uint8"
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="multiples of 8"):
        pipe("a red circle", num_frames=1, height=30, width=32, progress=False)


def test_the_trained_shape_and_flow_settings_travel_with_the_folder(tmp_path):
    from model.flow import FlowConfig

    t5 = build_tiny_t5(tmp_path / "t5")
    model = randomize(tiny_stdit(in_channels=48, caption_channels=32, caption_max_length=16), std=0.05)
    flow = FlowConfig(shift=2.0, spatial_compression=4)
    build_pipeline(model, "none:4", str(t5), 16, flow, sample_shape=(3, 32, 48)).save_pretrained(tmp_path / "pipe")
    pipe = T2VPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.flow_config() == flow and pipe.folder == tmp_path / "pipe"
    video = pipe("a red circle", num_inference_steps=2, progress=False)[0]
    assert video.shape == (3, 32, 48, 3)


def test_an_encoder_bundled_inside_the_folder_is_found_there(pipeline_dir, tmp_path):
    import shutil

    pipe = T2VPipeline.from_pretrained(pipeline_dir)
    folder = tmp_path / "bundled"
    shutil.copytree(pipeline_dir, folder)
    shutil.copytree(pipe.config.text_encoder_spec, folder / "encoders" / "text_encoder")
    bundled = T2VPipeline.from_pretrained(folder)
    assert bundled.resolve_spec("encoders/text_encoder") == str(folder / "encoders" / "text_encoder")
    assert bundled.resolve_spec("google/t5-v1_1-xxl") == "google/t5-v1_1-xxl"  # hub ids stay as they are


def test_prompts_are_cleaned_up_like_the_training_captions(pipeline_dir):
    """Training captions are cleaned (boilerplate opening dropped, first letter capitalised); a prompt is cleaned
    the same way before encoding, and the toy tokenizer ignores case, so all three prompts are one text."""
    pipe = T2VPipeline.from_pretrained(pipeline_dir)
    _, text_encoder = pipe.encoders()
    ids = [text_encoder.tokenizer(p).input_ids for p in ("A red circle", "a red circle")]
    assert ids[0] == ids[1] and text_encoder.tokenizer.unk_token_id not in ids[0]
    kwargs = dict(num_frames=1, height=32, width=32, num_inference_steps=2, progress=False)
    videos = [
        pipe(p, generator=torch.Generator().manual_seed(0), **kwargs)[0]
        for p in ("The video shows a red circle", "a red circle", "A red circle", "a blue square")
    ]
    assert (videos[0] == videos[1]).all() and (videos[1] == videos[2]).all()
    assert not (videos[2] == videos[3]).all()
