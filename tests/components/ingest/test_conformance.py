"""Ingest on files as common sources make them (Debian's ffmpeg): timing, frame counts, sizes and frame reading.

Each file's frames were made at known display times (`media_files.matrix_times`); ffprobe gives the reference rate.
"""

import logging
import re

import numpy as np
import pandas as pd
import pytest

from components.common import settings
from components.common.video import read_clip_frames
from components.ingest.config import IngestConfig
from components.ingest.ingest import ingest
from components.ingest.media import AnalysisConfig, analyze
from tests.components.ingest import media_files as mf

# clips of at most 1.5 s, so that each file has several and most start mid-file (readers must seek)
ANALYSIS = AnalysisConfig(min_seconds=0.5, max_seconds=1.5, max_duration=20.0)
NAMES = [*mf.MATRIX, "lying_duration.mkv"]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    return mf.make_matrix(tmp_path_factory.mktemp("matrix"))


@pytest.fixture(scope="module")
def manifest(matrix, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingested")
    cfg = IngestConfig(inputs=tuple(str(p) for p in matrix.values()), out_dir=str(out), progress=False)
    cfg = settings.updated(cfg, {"analysis.min_seconds": 0.5, "analysis.max_seconds": 1.5, "split_distance": None})
    result = ingest(settings.updated(cfg, {"filters.dedup_distance": None}))
    assert result.quarantined == {}, pd.read_parquet(out / "quarantine.parquet").to_dict("records")
    frame = pd.read_parquet(out / "manifest.parquet")
    frame["name"] = frame.source.str.rsplit("/", n=1).str[-1]
    return frame


def reference_fps(name: str, probe: dict) -> float:
    """ffprobe's average frame rate; frames / duration for variable frame rate, and for B-frame video in AVI, whose
    ffprobe average is the container's tick rate (two ticks a frame: 50 for a 25 fps file)."""
    if name == "h264_bframes.avi":
        assert probe["avg_frame_rate"] == pytest.approx(2 * probe["frames"] / probe["duration"])
    if name in ("vfr.mkv", "h264_bframes.avi"):
        return probe["frames"] / probe["duration"]
    return probe["avg_frame_rate"]


@pytest.mark.parametrize("name", NAMES)
def test_rate_frames_and_clip_times_match_the_file(matrix, name):
    path = matrix[name]
    info = analyze(str(path), name, ANALYSIS)
    probe = mf.ffprobe(path)
    truth = mf.matrix_times(name)
    assert info.num_frames == probe["frames"] == len(truth)
    assert info.fps == pytest.approx(reference_fps(name, probe), rel=0.005)
    assert info.fps == pytest.approx((len(truth) - 1) / truth[-1], rel=0.005)
    frame = 1 / info.fps
    assert len(info.clips) >= 2
    for clip in info.clips:
        end = truth[clip.end_frame] if clip.end_frame < len(truth) else truth[-1] + frame
        assert clip.start_s == pytest.approx(truth[clip.start_frame], abs=frame)
        assert clip.end_s - clip.start_s == pytest.approx(end - truth[clip.start_frame], abs=frame)
        assert clip.end_s - clip.start_s <= ANALYSIS.max_seconds + 1e-6
    assert info.vfr == (name == "vfr.mkv")
    assert info.timing == ("header" if name == "raw.h264" else "timestamps")
    assert (info.width, info.height) == ((240, 320) if name == "rotated.mp4" else (320, 240))


def test_the_manifest_records_timing_and_orientation(manifest):
    by_name = manifest.groupby("name").first()
    assert set(by_name.index) == set(NAMES)
    assert by_name.loc["vfr.mkv", "vfr"] and not by_name.drop("vfr.mkv").vfr.any()
    assert by_name.loc["raw.h264", "timing"] == "header"
    assert manifest[manifest.name == "raw.h264"].seek_time.isna().all()  # read by counting from the first frame
    assert (by_name.drop("raw.h264").timing == "timestamps").all()
    assert by_name.loc["rotated.mp4", "rotation"] == 90
    assert tuple(by_name.loc["rotated.mp4", ["width", "height"]]) == (240, 320)
    assert (manifest.fps.round(3) == manifest.name.map({"vfr.mkv": 23.965}).fillna(25.0)).all()


def block_means(frames: np.ndarray, size: int = 8) -> np.ndarray:
    """(N, H, W, C) frames as the means of their size x size blocks (float32)."""
    n, h, w, c = frames.shape
    h, w = h // size * size, w // size * size
    cut = frames[:, :h, :w].astype(np.float32).reshape(n, h // size, size, w // size, size, c)
    return cut.mean(axis=(2, 4))


def distances(decoded: np.ndarray, blocks: np.ndarray, got: np.ndarray, k: int) -> np.ndarray:
    """The mean absolute difference of `got` to each decoded frame, exact for frame k and for every frame that could
    come near it: a frame's block-mean difference is a lower bound of its exact one (the mean of |a - b| is at least
    the mean over blocks of |block mean a - block mean b|, on the blocks' pixels), so where that bound is already over
    twice frame k's distance the bound stands in. Any check of the form "k is nearest, every other frame at least
    twice as far" reads the same on these as on the exact distances, at a fraction of the cost."""
    _, h, w, _ = decoded.shape
    exact_k = float(np.abs(decoded[k] - got).mean())
    bh, bw = blocks.shape[1] * 8, blocks.shape[2] * 8
    bound = np.abs(blocks - block_means(got[None])).mean(axis=(1, 2, 3)) * (bh * bw) / (h * w)
    out = bound.astype(np.float64)
    near = np.flatnonzero(bound <= 2 * exact_k)
    out[near] = np.abs(decoded[near] - got).mean(axis=(1, 2, 3))
    out[k] = exact_k
    return out


@pytest.mark.parametrize("name", NAMES)
def test_readers_get_each_clips_own_frames(matrix, manifest, name, caplog):
    """What captioning and precompute read for a clip (seeking to its anchor) are the frames whose display times
    fall in the clip, as ffmpeg decodes them independently; on variable frame rate too."""
    decoded = mf.ffmpeg_frames(matrix[name]).astype(np.int16)
    blocks = block_means(decoded)
    truth = mf.matrix_times(name)
    rows = manifest[manifest.name == name].sort_values("start_frame").to_dict("records")
    assert any(row["start_frame"] > 0 for row in rows)
    with caplog.at_level(logging.DEBUG, logger="components.common.video"):
        for row in rows:
            slack = 0.25 / row["fps"]  # timestamps rounded by the container (Matroska: to the millisecond)
            inside = np.flatnonzero((truth >= row["start_s"] - slack) & (truth < row["end_s"] - slack))
            assert list(inside) == list(range(row["start_frame"], row["end_frame"]))
            frames = np.stack(read_clip_frames(row, list(inside))).astype(np.int16)
            for got, k in zip(frames, inside, strict=True):
                # two decoders (ffmpeg 5.1 here, PyAV's own) differ by a few levels; neighbouring frames by far more
                errors = distances(decoded, blocks, got, k)
                second = np.partition(errors, 1)[1]
                assert errors.argmin() == k and errors[k] < second / 2, (row["clip_id"], k, errors.argmin(), errors[k])
    seeks = [r for r in caplog.records if "reading from the first frame" in r.getMessage()]
    assert not seeks, seeks[0].getMessage()  # every anchored clip was found by seeking, not by reading from 0


def test_one_stream_in_three_containers_gets_the_same_clips_and_fingerprints(manifest):
    """MP4, Matroska and AVI (whose header counts this B-frame video at twice its rate) hold one stream: its frames
    are sampled at the same instants, so every clip gets the same perceptual hash and scores."""
    clips = {
        name: manifest[manifest.name == name].sort_values("start_frame")[
            ["start_frame", "end_frame", "phash", "motion", "sharpness", "brightness"]
        ].to_dict("records")
        for name in mf.SAME_STREAM
    }  # fmt: skip
    first = clips[mf.SAME_STREAM[0]]
    assert len(first) >= 2 and all(clips[name] == first for name in mf.SAME_STREAM[1:]), clips


def test_the_same_stream_is_one_group_kept_once_and_a_different_video_is_not(matrix, tmp_path):
    other = mf.scenes_video(tmp_path / "other.mp4", [60, 72])
    inputs = (*(str(matrix[name]) for name in mf.SAME_STREAM), str(other))
    result = ingest(IngestConfig(inputs=inputs, out_dir=str(tmp_path / "out"), progress=False))  # the defaults
    kept = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert set(kept.source) == {inputs[0], str(other)}  # the first copy kept, the other two removed as copies
    assert result.summary["sources_grouped"] == 3 and result.summary["split_groups"] == 2
    fates = pd.read_parquet(tmp_path / "out" / "files.parquet").set_index("source")
    assert list(fates.fate) == ["kept", "filtered", "filtered", "kept"]
    assert set(fates.code[fates.fate == "filtered"]) == {"near-duplicate"}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return mf.broken(tmp_path_factory.mktemp("broken"))


def ingest_under_recipe(inputs: list[str], out, **analysis) -> tuple:
    """Ingest as a recipe runs it: the smallest frame kept is that of stage 1's smallest bucket (16 x 16 here)."""
    recipe = {"precompute": {"bucket_config": {"16": {1: [1.0, 4]}}}, "ingest": {"analysis": analysis}}
    fixed = {"inputs": inputs, "out_dir": str(out), "progress": False}
    cfg = settings.load(IngestConfig, recipe=recipe, sections=("ingest",), fixed=fixed)
    assert cfg.filters.min_pixels == 256
    result = ingest(cfg)
    return result, pd.read_parquet(out / "files.parquet").set_index("source")


def test_each_file_meets_one_fate_tiny_frames_filtered_lost_frames_quarantined(matrix, broken, tmp_path):
    good = str(matrix["h264_bpyramid.mp4"])
    result, fates = ingest_under_recipe([str(broken["tiny.mp4"]), str(broken["lost_frames.avi"]), good], tmp_path)
    tiny, lost = fates.loc[str(broken["tiny.mp4"])], fates.loc[str(broken["lost_frames.avi"])]
    assert tiny.fate == "filtered" and tiny.reason.startswith("frames 2 x 2 below the minimum of 256 pixels")
    assert lost.fate == "quarantined" and lost.code == "lost_frames"
    found = re.search(r"decodes (\d+) frames where its header counts (\d+) and its timestamps imply (\d+)", lost.reason)
    decoded, header, implied = map(int, found.groups())
    assert decoded < 0.2 * header and abs(header - 450) < 15 and abs(implied - header) <= 2  # 15% of 30 s at 15 fps
    assert fates.loc[good].fate == "kept" and len(fates) == 3
    assert result.summary["files"] == {
        "kept": {"kept": 1},
        "filtered": {"frames": 1},
        "quarantined": {"lost_frames": 1},
    }


def test_a_file_with_lost_frames_is_kept_with_the_reason_when_partial_files_are_allowed(broken, tmp_path):
    _, fates = ingest_under_recipe([str(broken["lost_frames.avi"])], tmp_path, keep_partial=True)
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    assert len(manifest) and manifest.note.str.contains("of its frames are lost").all()
    assert fates.iloc[0].fate == "kept" and "of its frames are lost" in fates.iloc[0].reason
