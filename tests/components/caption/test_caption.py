import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from components.caption.caption import CaptionConfig, caption, part_path, read_part
from components.caption.captioners import MetadataCaptioner, VLMCaptioner
from components.caption.cleanup import append_scores
from components.caption.frames import clip_frames, frame_indices
from components.common import settings
from components.common.toy.tiny import build_tiny_llava_next, build_tiny_llava_next_video
from components.ingest.config import IngestConfig
from components.ingest.ingest import ingest
from components.synth.synth import SynthConfig, synth
from model.inference.prompts import clean_caption


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    toy = synth(SynthConfig(out_dir=str(root / "toy"), videos=5, images=2, cut_videos=1))
    ingest(
        settings.updated(
            IngestConfig(inputs=(str(toy),), out_dir=str(root / "ingest"), progress=False),
            {"filters.dedup_distance": None},
        )
    )
    return root / "ingest" / "manifest.parquet"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "llava_next": str(build_tiny_llava_next(root / "llava-next")),
        "llava_next_video": str(build_tiny_llava_next_video(root / "llava-next-video")),
    }


def cfg(manifest, out, **overrides):
    base = {"manifest": str(manifest), "out_dir": str(out), "max_new_tokens": 6, "min_new_tokens": 3, "progress": False}
    return CaptionConfig(**{**base, **overrides})


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("The video shows a red circle moving left.", "A red circle moving left."),
        ("  In this video,   the camera pans   over a lake. ", "The camera pans over a lake."),
        ("This clip depicts two dogs.", "Two dogs."),
        ("The video begins with a sunset</s>", "A sunset"),
        ("A cat sleeps.", "A cat sleeps."),
        ("The video shows", "The video shows"),  # nothing left to keep: unchanged
        ("", ""),
    ],
)
def test_cleanup_of_boilerplate_openings(raw, clean):
    assert clean_caption(raw) == clean


def test_score_suffix_as_open_sora():
    assert append_scores("A cat sleeps.", {"aes": 5.52, "motion": 10}) == (
        "A cat sleeps. aesthetic score: 5.5, motion score: 10.0."
    )
    assert append_scores("A cat", {"aes": float("nan")}) == "A cat"


def test_frame_indices_spread_over_the_clip():
    assert frame_indices(60, 120, 3) == [70, 90, 110]
    assert frame_indices(0, 2, 8) == [0, 1]


def test_clip_frames_reads_the_clip_not_the_file_start(manifest):
    rows = pd.read_parquet(manifest)
    second_scene = rows[(rows.kind == "video") & (rows.start_frame > 0)].iloc[0].to_dict()
    frames = clip_frames(second_scene, 4)
    first = clip_frames({**second_scene, "start_frame": 0, "end_frame": second_scene["start_frame"]}, 4)
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)
    assert abs(frames[0].mean() - first[-1].mean()) > 20  # another scene, another background


def test_metadata_captions_from_sidecars_cover_every_clip(manifest, tmp_path):
    result = caption(cfg(manifest, tmp_path, captioner="metadata"))
    out = pd.read_parquet(tmp_path / "manifest.parquet")
    source = pd.read_parquet(manifest)
    assert result.complete and sorted(out.clip_id) == sorted(source.clip_id)
    assert out.text.str.match(r"^A (red|green|blue|yellow) (circle|square|triangle) (moves|rests)").all()
    assert result.summary["empty"] == 0


def test_metadata_from_a_missing_column_is_a_clear_error(manifest, tmp_path):
    with pytest.raises(ValueError, match="no column 'caption'"):
        caption(cfg(manifest, tmp_path, captioner="metadata", from_column="caption"))


@pytest.mark.parametrize("family", ["llava_next", "llava_next_video"])
def test_batched_captions_equal_unbatched_ones(manifest, models, family, tmp_path):
    batched = caption(cfg(manifest, tmp_path / "b", model=models[family], batch_size=4, frames=3))
    single = caption(cfg(manifest, tmp_path / "s", model=models[family], batch_size=1, frames=3))
    a = pd.read_parquet(tmp_path / "b" / "captions.parquet")
    b = pd.read_parquet(tmp_path / "s" / "captions.parquet")
    assert batched.complete and single.complete
    assert a.clip_id.is_unique and sorted(a.clip_id) == sorted(pd.read_parquet(manifest).clip_id)
    pd.testing.assert_frame_equal(a, b)
    assert (a.raw.str.split().str.len() >= 3).all()  # min_new_tokens


def test_the_family_comes_from_the_checkpoint(models):
    assert VLMCaptioner(models["llava_next_video"], max_new_tokens=2).family == "llava_next_video"
    with pytest.raises(ValueError, match="supported families"):
        VLMCaptioner(models["llava_next"], family="qwen2_vl")


def test_shards_merge_to_the_unsharded_result(manifest, models, tmp_path):
    whole = caption(cfg(manifest, tmp_path / "whole", model=models["llava_next"], batch_size=3))
    for shard in (2, 0, 1):
        result = caption(cfg(manifest, tmp_path / "sharded", model=models["llava_next"], shard=shard, num_shards=3))
        assert result.complete == (shard == 1)
    for name in ("captions.parquet", "manifest.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "whole" / name), pd.read_parquet(tmp_path / "sharded" / name)
        )
    assert whole.summary["clips"] == len(pd.read_parquet(manifest))


@pytest.mark.slow
def test_sigkill_then_rerun_loses_nothing_and_recomputes_nothing(manifest, models, tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable, "-m", "components.caption", "--manifest", str(manifest), "--out-dir", str(out),
        "--model", models["llava_next"], "--batch-size", "1", "--max-new-tokens", "48", "--min-new-tokens", "48",
        "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = part_path(out, 0, 1)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_part(part)) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_part(part)
    k = len(first)
    assert 3 <= k < len(pd.read_parquet(manifest)), "the run was killed mid-way"
    slow = {"max_new_tokens": 48, "min_new_tokens": 48}  # long captions: a wide window to kill the run in
    result = caption(cfg(manifest, out, model=models["llava_next"], batch_size=1, **slow))
    assert result.skipped == k and result.captioned == len(pd.read_parquet(manifest)) - k
    lines = part.read_text().splitlines()
    assert len(lines) == len({json.loads(line)["clip_id"] for line in lines})  # nothing captioned twice
    clean = caption(cfg(manifest, tmp_path / "clean", model=models["llava_next"], batch_size=1, **slow))
    assert clean.complete
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "captions.parquet"), pd.read_parquet(tmp_path / "clean" / "captions.parquet")
    )


def test_metadata_captioner_reads_json_sidecars(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "a.json").write_text(json.dumps({"caption": " waves at dusk "}))
    assert MetadataCaptioner().caption([{"clip_id": "x", "source": str(tmp_path / "a.mp4")}]) == ["waves at dusk"]
