import json
import shutil

import pandas as pd
import pytest

from components.common import settings
from components.ingest import ingest as ingest_module
from components.ingest.config import IngestConfig
from components.ingest.ingest import ingest
from components.ingest.media import AnalysisConfig, analyze
from components.ingest.sources import discover
from components.ingest.split import assign_splits, near_duplicates
from components.synth.synth import SynthConfig, synth
from t2v.cli import main
from tests.components.ingest import media_files as mf

GIB = 2**30


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A folder of good media (toy world, a three-scene video, a still) and one of every kind of bad file."""
    root = tmp_path_factory.mktemp("library")
    toy = synth(SynthConfig(out_dir=str(root / "toy"), videos=4, images=2, cut_videos=1, seconds=2.5))
    mf.scenes_video(root / "three_scenes.mp4", [60, 72, 50])
    no_bframes = mf.scenes_video(root / "nob.mp4", [60], bf="0")
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "notes.mp4").write_text("this is not a video\n" * 20)
    mf.truncated(toy / "videos" / "toy_0001.mp4", bad / "cut_in_half.mp4")
    mf.scenes_video(bad / "faststart.mp4", [60], fps=24)
    mf.audio_only(bad / "voice.m4a")
    mf.zero_sample_durations(no_bframes, bad / "zero_durations.mp4")
    mf.zero_timescale(no_bframes, bad / "zero_timescale.mp4")
    mf.sparse(bad / "huge.mp4", 2 * GIB)
    (bad / "dangling.mp4").symlink_to(bad / "missing.mp4")
    no_bframes.unlink()
    return root


EXPECTED_QUARANTINE = {
    "empty.mp4": "zero_bytes",
    "notes.mp4": "not_video",
    "cut_in_half.mp4": "truncated",
    "voice.m4a": "audio_only",
    "zero_durations.mp4": "zero_fps",
    "zero_timescale.mp4": "zero_fps",
    "huge.mp4": "over_limit",
    "dangling.mp4": "unreadable",
}


def config(library, out, **overrides):
    cfg = IngestConfig(
        inputs=(str(library / "toy"), str(library / "three_scenes.mp4"), str(library / "bad")),
        out_dir=str(out),
        max_bytes=GIB,
        progress=False,
    )
    return settings.updated(cfg, {"filters.dedup_distance": None, **overrides})


@pytest.fixture(scope="module")
def first_run(library, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest")
    result = ingest(config(library, out))
    return result, out


def test_quarantine_lists_every_bad_file_with_its_reason(first_run):
    result, out = first_run
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    got = {
        source.rsplit("/", 1)[-1]: reason for source, reason in zip(quarantine.source, quarantine.reason, strict=True)
    }
    assert got == EXPECTED_QUARANTINE
    assert all(len(d) > 20 for d in quarantine.detail)  # each says why and what to do
    assert result.quarantined == dict(pd.Series(list(EXPECTED_QUARANTINE.values())).value_counts())


def test_every_good_file_comes_through_as_clips(first_run, library):
    result, out = first_run
    manifest = pd.read_parquet(out / "manifest.parquet")
    per_source = manifest.groupby("source").size().to_dict()
    toy = library / "toy"
    assert per_source == {
        str(toy / "images" / "toy_0000.png"): 1,
        str(toy / "images" / "toy_0001.png"): 1,
        str(toy / "videos" / "toy_0000.mp4"): 2,  # two scenes
        str(toy / "videos" / "toy_0001.mp4"): 1,
        str(toy / "videos" / "toy_0002.mp4"): 1,
        str(toy / "videos" / "toy_0003.mp4"): 1,
        str(library / "three_scenes.mp4"): 3,
        str(library / "bad" / "faststart.mp4"): 1,
    }
    assert result.ignored == 8  # the toy world's caption sidecars, ground truth and summary are not media
    for column in ("path", "text", "num_frames", "height", "width", "aspect_ratio", "fps", "resolution"):
        assert column in manifest.columns
    three = manifest[manifest.source == str(library / "three_scenes.mp4")].sort_values("start_frame")
    assert three[["start_frame", "end_frame"]].values.tolist() == [[0, 60], [60, 132], [132, 182]]
    assert three.fps.tolist() == [24.0] * 3 and three.num_frames.tolist() == [60, 72, 50]
    assert three.start_s.tolist() == pytest.approx([0.0, 2.5, 5.5])
    images = manifest[manifest.kind == "image"]
    assert images.num_frames.tolist() == [1, 1]
    assert manifest.clip_id.is_unique
    csv = pd.read_csv(out / "manifest.csv")
    assert list(csv.columns[:8]) == [
        "path",
        "text",
        "num_frames",
        "height",
        "width",
        "aspect_ratio",
        "fps",
        "resolution",
    ]


def test_no_source_is_in_both_splits(first_run):
    _, out = first_run
    manifest = pd.read_parquet(out / "manifest.parquet")
    splits_per_source = manifest.groupby("source_hash").split.nunique()
    assert (splits_per_source == 1).all()
    assert set(manifest.split) == {"train", "val"}


def test_split_is_deterministic_by_source_and_about_the_fraction():
    hashes = [f"{i:064x}" for i in range(4000)]
    a = assign_splits(hashes, seed=0, fraction=0.05)
    assert a == assign_splits(list(reversed(hashes)), seed=0, fraction=0.05)
    share = sum(v == "val" for v in a.values()) / len(a)
    assert 0.04 < share < 0.06
    assert assign_splits(hashes, seed=1, fraction=0.05) != a


def test_rerun_skips_finished_files_and_gives_the_same_manifest(first_run, library):
    result, out = first_run
    again = ingest(config(library, out))
    assert again.cached == again.sources - 3  # all but the empty, huge and dangling files
    a, b = (pd.read_parquet(out / "manifest.parquet") for _ in range(2))
    assert result.summary["manifest_sha256"] == again.summary["manifest_sha256"]
    pd.testing.assert_frame_equal(a, b)


def test_interrupted_run_keeps_what_it_finished(library, tmp_path, monkeypatch):
    """Interrupted while the sixth file decodes: the five before it (the last one's scores on the scoring thread
    then) are kept."""
    real = ingest_module.start_source
    calls = []

    def flaky(spec, cfg, cache_dir):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(spec)
        return real(spec, cfg, cache_dir)

    monkeypatch.setattr(ingest_module, "start_source", flaky)
    with pytest.raises(KeyboardInterrupt):
        ingest(config(library, tmp_path / "out"))
    monkeypatch.setattr(ingest_module, "start_source", real)
    resumed = ingest(config(library, tmp_path / "out"))
    assert resumed.cached == 5
    clean = ingest(config(library, tmp_path / "clean"))
    assert resumed.summary["manifest_sha256"] == clean.summary["manifest_sha256"]


def test_parallel_workers_give_the_same_manifest(first_run, library, tmp_path):
    result, _ = first_run
    parallel = ingest(config(library, tmp_path / "parallel", workers=2))
    assert parallel.summary["manifest_sha256"] == result.summary["manifest_sha256"]


def test_scene_detection_finds_known_cuts_within_one_frame(tmp_path):
    video = mf.scenes_video(tmp_path / "cuts.mp4", [40, 55, 30, 45])
    info = analyze(str(video), video.name, AnalysisConfig(min_seconds=1.0))
    expected = [40, 95, 125]
    assert len(info.cuts) == len(expected)
    assert all(abs(got - want) <= 1 for got, want in zip(info.cuts, expected, strict=True))


def test_long_scenes_are_split_and_short_ones_dropped_with_a_reason(tmp_path):
    video = mf.scenes_video(tmp_path / "long.mp4", [24 * 5, 24])  # 5 s then 1 s
    info = analyze(str(video), video.name, AnalysisConfig(max_seconds=2.0))
    assert [(c.start_frame, c.end_frame) for c in info.clips] == [(0, 48), (48, 96)]
    assert [(d["start_frame"], d["end_frame"]) for d in info.dropped] == [(96, 120), (120, 144)]
    assert all("shorter than 2.0 s" in d["reason"] for d in info.dropped)


def test_filters_reject_clips_with_the_reason(library, tmp_path):
    result = ingest(config(library, tmp_path, **{"filters.min_brightness": 0.5}))
    rejected = pd.read_parquet(tmp_path / "rejected_clips.parquet")
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    assert (manifest.brightness >= 0.5).all()
    assert rejected.reason.str.startswith("brightness").any()
    assert result.clips + len(rejected) == 11


def test_byte_identical_files_are_kept_once_even_with_dedup_off(tmp_path):
    toy = synth(SynthConfig(out_dir=str(tmp_path / "toy"), videos=2, images=1, size=32, seconds=2.0))
    shutil.copy(toy / "videos" / "toy_0000.mp4", toy / "videos" / "copy_of_0000.mp4")
    cfg = IngestConfig(inputs=(str(toy),), out_dir=str(tmp_path / "out"), progress=False)
    result = ingest(settings.updated(cfg, {"filters.dedup_distance": None}))
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    rejected = pd.read_parquet(tmp_path / "out" / "rejected_clips.parquet")
    assert result.clips == 3 and manifest.clip_id.is_unique
    assert rejected.reason.str.startswith("duplicate-file of").sum() == 1


def test_near_duplicates_by_hash_distance():
    base = 0x0F0F_0F0F_0F0F_0F0F
    hashes = [base, base ^ 0b111, base ^ (0xFFFF << 20), base ^ 0b1, 0]
    assert near_duplicates(hashes, 4) == [None, 0, None, 0, None]
    assert near_duplicates(hashes, 0) == [None, None, None, None, None]


def test_discover_reads_list_files_and_globs(library, tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# videos\n{library / 'three_scenes.mp4'}\n")
    sources, _ = discover([str(listing), str(library / "toy" / "videos" / "*.mp4")])
    assert sources[0] == str(library / "three_scenes.mp4") and len(sources) == 5


def test_cli_reports_quarantine_in_its_exit_status(library, tmp_path, capsys):
    good = ["ingest", str(library / "toy"), "--out-dir", str(tmp_path / "a"), "--no-progress"]
    assert main([*good, "--filters.dedup-distance", "none"]) == 0
    bad = ["ingest", str(library / "bad" / "notes.mp4"), str(library / "toy"), "--out-dir", str(tmp_path / "b")]
    assert main([*bad, "--no-progress"]) == 3
    out = capsys.readouterr().out
    assert "1 quarantined" in out and "manifest:" in out
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["quarantined"] == {"not_video": 1}


@pytest.mark.parametrize("mode", ["copy", "reencode"])
def test_clip_files_by_stream_copy_or_reencode(library, tmp_path, mode):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(library / "three_scenes.mp4", src)
    ingest(config(library, tmp_path / "out", inputs=(str(src),), clip_mode=mode, val_fraction=0.0))
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    again = ingest(config(library, tmp_path / "check", inputs=(str(tmp_path / "out" / "clips"),), val_fraction=0.0))
    assert len(manifest) == 3 and again.clips == 3
    decoded = pd.read_parquet(tmp_path / "check" / "manifest.parquet").sort_values("source")
    if mode == "reencode":  # frame-exact
        assert sorted(decoded.num_frames) == sorted(manifest.num_frames) == [50, 60, 72]
    else:  # from the keyframe at or before each start; never loses a frame of the clip
        assert all(n >= want for n, want in zip(sorted(decoded.num_frames), [50, 60, 72], strict=True))


def test_decoding_wins_over_a_header_that_lies_about_duration(tmp_path):
    real = mf.scenes_video(tmp_path / "real.mkv", [60])
    lying = mf.wrong_duration(real, tmp_path / "lying.mkv", factor=10)
    info = analyze(str(lying), lying.name, AnalysisConfig(max_duration=10.0))
    assert info.header_duration == pytest.approx(25.0, rel=0.05)  # what the header says
    assert info.duration == pytest.approx(2.5) and info.num_frames == 60 and info.fps == 24.0
    assert [(c.start_frame, c.end_frame) for c in info.clips] == [(0, 60)]


def test_frames_and_durations_over_the_limits_are_quarantined(tmp_path):
    big = mf.scenes_video(tmp_path / "big.mp4", [60], size=96)
    long = mf.scenes_video(tmp_path / "long.mp4", [24 * 4])
    cfg = config(
        tmp_path,
        tmp_path / "out",
        inputs=(str(big), str(long)),
        **{"analysis.max_pixels": 80 * 80, "analysis.max_duration": 3.0},
    )
    result = ingest(cfg)
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert result.quarantined == {"over_limit": 2}
    assert any("max_pixels" in d for d in quarantine.detail) and any("max_duration" in d for d in quarantine.detail)
