import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from pandas.testing import assert_frame_equal
from safetensors.torch import load_file, save_file

from components.caption.caption import CaptionConfig, caption
from components.common import settings
from components.common.clip_plan import plan
from components.common.toy.tiny import build_tiny_t5, build_tiny_vae, build_tiny_video_vae
from components.common.video import read_frames
from components.ingest.config import IngestConfig
from components.ingest.ingest import ingest
from components.precompute import precompute as precompute_module
from components.precompute.config import PrecomputeConfig
from components.precompute.layout import finish, layout
from components.precompute.precompute import encode_files, precompute
from components.synth.synth import SynthConfig, synth
from model.planning.buckets import assign, bucket_size, resize_crop, validate
from model.weights.encoders import PatchAutoencoder, TextEncoder, load_vae

TOY_BUCKETS = {"64": {1: (1.0, 8), 16: (1.0, 4)}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    toy = synth(SynthConfig(out_dir=str(root / "toy"), videos=4, images=2, cut_videos=1))
    cfg = IngestConfig(inputs=(str(toy),), out_dir=str(root / "ingest"), progress=False, val_fraction=0.3)
    ingest(settings.updated(cfg, {"filters.dedup_distance": None}))
    caption(CaptionConfig(manifest=str(root / "ingest" / "manifest.parquet"), out_dir=str(root / "caption"),
                          captioner="metadata", progress=False))  # fmt: skip
    return {
        "manifest": root / "caption" / "manifest.parquet",
        "vae": str(build_tiny_vae(root / "vae")),
        "t5": str(build_tiny_t5(root / "t5")),
    }


def config(data, tmp_path, **overrides):
    base = dict(
        manifest=str(data["manifest"]),
        out_root=str(tmp_path),
        vae="none:4",
        text_encoder=data["t5"],
        bucket_config=TOY_BUCKETS,
        frame_interval=2,
        progress=False,
    )
    return PrecomputeConfig(**{**base, **overrides})


def test_buckets_follow_open_sora_rules():
    cfg = {"144p": {1: (1.0, 64), 16: (1.0, 8), 32: (1.0, 4)}, "256": {16: (1.0, 4)}}
    video = assign("a", 720, 1280, 100, cfg)
    assert (video.resolution, video.num_frames) == ("256", 16)  # the largest area it reaches
    small = assign("b", 200, 320, 100, cfg)
    assert (small.resolution, small.num_frames, small.batch_size) == ("144p", 32, 4)  # the longest it fills
    assert assign("b", 200, 320, 40, cfg, interval=2).num_frames == 16  # 20 frames at interval 2
    assert assign("c", 720, 1280, 1, cfg).num_frames == 1  # an image: only the 1-frame bucket
    assert assign("d", 100, 100, 100, cfg) is None  # too small for every resolution
    square = assign("e", 512, 512, 16, cfg)
    assert (square.resolution, square.height, square.width) == ("256", 256, 256)
    assert bucket_size(144 * 256, 9 / 16) == (144, 256)
    kept = [assign(f"clip{i}", 720, 1280, 16, {"256": {16: (0.3, 4)}}) is not None for i in range(2000)]
    assert 0.25 < np.mean(kept) < 0.35  # probability: a deterministic draw per clip
    assert kept == [assign(f"clip{i}", 720, 1280, 16, {"256": {16: (0.3, 4)}}) is not None for i in range(2000)]


def test_bad_bucket_configs_name_the_entry():
    with pytest.raises(ValueError, match=r"bucket_config\['256'\]\[16\]"):
        validate({"256": {16: (1.0,)}})
    with pytest.raises(ValueError, match="unknown resolution"):
        validate({"4k": {1: (1.0, 1)}})
    assert validate(yaml.safe_load('{"64": {"1": [1.0, 8]}}')) == {"64": {1: [1.0, 8]}}  # frames as integers


def test_resize_crop_covers_then_crops_the_centre():
    frame = np.zeros((90, 160, 3), np.uint8)
    frame[:, 70:90] = 255
    out = resize_crop(frame, 64, 64)
    assert out.shape == (64, 64, 3) and out[:, 32].mean() > 200 and out[:, 2].mean() < 10


def test_patch_autoencoder_is_exact():
    x = torch.rand(2, 3, 5, 32, 48) * 2 - 1
    ae = PatchAutoencoder(4)
    z = ae.encode(x)
    assert z.shape == (2, 48, 5, 8, 12) and torch.equal(ae.decode(z), x)


def test_tiny_encoders_load_through_the_production_paths(data):
    vae = load_vae(data["vae"])
    latents = vae.encode(torch.rand(1, 3, 2, 64, 64) * 2 - 1)
    assert latents.shape == (1, 4, 2, 8, 8) and vae.spatial_compression == 8
    assert vae.decode(latents).shape == (1, 3, 2, 64, 64)
    text = TextEncoder(data["t5"], max_length=4)
    emb, mask = text.encode(["a red circle moves left on a black background", "a cat"])
    assert emb.shape == (2, 4, 32) and mask.sum(1).tolist() == [4, 2]  # truncated to max_length


def test_precompute_stores_exact_pixels_and_captions(data, tmp_path):
    result = precompute(config(data, tmp_path))
    manifest = pd.read_parquet(data["manifest"])
    index = result.index
    assert not result.reused and result.samples == len(manifest) and result.skipped == 0
    assert set(index.bucket) == {"64-16f-64x64", "64-1f-64x64"}
    assert (index.groupby("clip_id").size() == 1).all() and set(index.split) == {"train", "val"}
    row = index[index.num_frames == 16].iloc[0]
    tensors = load_file(result.out_dir / row.shard)
    latent, text = tensors[f"{row.clip_id}.latent"], tensors[f"{row.clip_id}.text"]
    assert list(latent.shape) == list(row.latent_shape) == [48, 16, 16, 16]
    assert text.shape == (row.text_tokens, 32)
    source = manifest.set_index("clip_id").loc[row.clip_id]
    frames = read_frames(source.source, list(row.frame_indices))  # counted from the first frame, no seek
    pixels = PatchAutoencoder(4).decode(latent[None])[0]  # (3, T, H, W)
    expected = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert torch.equal(pixels, expected)
    assert row.frame_indices[1] - row.frame_indices[0] == 2  # the sampling interval


def test_same_inputs_reuse_the_folder_and_any_change_makes_a_new_one(data, tmp_path):
    first = precompute(config(data, tmp_path))
    again = precompute(config(data, tmp_path))
    assert again.reused and again.out_dir == first.out_dir
    other_vae = precompute(config(data, tmp_path, vae=data["vae"]))
    assert other_vae.key != first.key and other_vae.index.latent_shape.iloc[0][0] == 4
    assert precompute(config(data, tmp_path, frame_interval=1)).key != first.key
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no half-written folders


def test_target_fps_sets_the_interval_per_clip(data):
    manifest = pd.read_parquet(data["manifest"])
    planned = plan(manifest, PrecomputeConfig(bucket_config=TOY_BUCKETS, target_fps=8.0))
    videos = planned[planned.kind == "video"]
    assert set(videos.interval) == {3}  # 24 fps sources


def test_clear_errors_for_missing_or_uncaptioned_manifests(data, tmp_path):
    with pytest.raises(ValueError, match="not found"):
        precompute(config(data, tmp_path, manifest=str(tmp_path / "nope.parquet")))
    bare = pd.read_parquet(data["manifest"]).assign(text="")
    bare.to_parquet(tmp_path / "bare.parquet")
    with pytest.raises(ValueError, match="no captions"):
        precompute(config(data, tmp_path, manifest=str(tmp_path / "bare.parquet")))


def test_a_3d_video_vae_compresses_time_too(tmp_path):
    vae = load_vae(str(build_tiny_video_vae(tmp_path / "video-vae")))
    latents = vae.encode(torch.rand(1, 3, 5, 32, 32) * 2 - 1)
    assert vae.temporal_compression == 2 and latents.shape == (1, 4, 3, 16, 16)  # causal: 1 + (5 - 1) / 2 frames
    assert vae.decode(latents).shape == (1, 3, 5, 32, 32)


def test_three_tasks_write_the_folder_of_one_and_a_killed_task_resumes(data, tmp_path, monkeypatch):
    """Fanned out over three tasks (file j to task j mod 3), the folder holds the tensors and index one process
    writes; a task killed after its first file re-encodes only the file it had not finished."""
    batches = layout(config(data, tmp_path, shard_size=3, batch_size=2)).files
    assert [len(f) for f in batches[:-1]] == [2] * (len(batches) - 1)  # a file ends at a batch's end, never in one
    sizes = {"vae": data["vae"], "shard_size": 1, "batch_size": 1}  # a clip per file: seven files, task 1 has two
    one = precompute(config(data, tmp_path / "one", **sizes))
    cfg = config(data, tmp_path / "three", num_shards=3, **sizes)
    files = layout(cfg).files
    assert len(files) >= 5
    encode_files(cfg, layout(cfg), 0, 3)
    written = []

    def killed_after_one_file(tensors, path):
        if written:
            raise RuntimeError("killed")
        written.append(path)
        save_file(tensors, path)

    monkeypatch.setattr(precompute_module, "save_file", killed_after_one_file)
    with pytest.raises(RuntimeError, match="killed"):
        encode_files(cfg, layout(cfg), 1, 3)
    monkeypatch.undo()
    encode_files(cfg, layout(cfg), 2, 3)
    with pytest.raises(ValueError, match=r"tasks \[1\] of 3 did not finish"):
        finish(cfg, layout(cfg))
    assert encode_files(cfg, layout(cfg), 1, 3) == len(files[1::3]) - 1  # what the killed attempt left
    three = finish(cfg, layout(cfg))
    assert three.key == one.key and not three.reused
    assert_frame_equal(three.index, one.index)
    names = sorted(p.name for p in one.out_dir.iterdir())
    assert names == sorted(p.name for p in three.out_dir.iterdir()) and len(names) == len(files) + 2
    for name in (n for n in names if n.endswith(".safetensors")):
        a, b = load_file(one.out_dir / name), load_file(three.out_dir / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    meta = [json.loads((r.out_dir / "meta.json").read_text()) for r in (one, three)]
    assert meta[0] == {**meta[1], "config": {**meta[1]["config"], "out_root": str(tmp_path / "one")}}
    assert sorted(p.name for p in (tmp_path / "three").iterdir()) == sorted(["LATEST", three.key])  # no staging
