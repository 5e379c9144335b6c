"""Scene detection: the content detector's scores and cuts are PySceneDetect's ContentDetector's on the same small
copies; other pixel formats and the adaptive detector find the same cuts."""

import av
import numpy as np
import pytest
from scenedetect.common import FrameTimecode
from scenedetect.detector import FlashFilter
from scenedetect.detectors import ContentDetector
from scenedetect.stats_manager import StatsManager

from components.ingest.media import AnalysisConfig, analyze
from components.ingest.scenes import ContentCuts, MinSceneLength, SmallFrames
from tests.components.ingest import media_files as mf

SMALL = (48, 32)
# shots of (frames, colour): a 2-frame flash inside a shot, a shot shorter than 15 frames, then ordinary cuts
SHOTS = [(20, (200, 60, 60)), (2, (250, 250, 250)), (20, (200, 60, 60)), (30, (40, 160, 60)), (6, (60, 60, 200)),
         (30, (150, 150, 40)), (25, (90, 20, 120))]  # fmt: skip


def shots(plan, size=(96, 64), pixel_format="yuv420p", seed=0):
    """Decoded-like frames: each shot a texture of its colour (detail at a 4-pixel scale), panning a pixel a frame."""
    rng = np.random.default_rng(seed)
    w, h = size
    frames = []
    for count, colour in plan:
        detail = np.kron(rng.integers(-25, 26, (h // 4 + 1, (w + count) // 4 + 1, 3)), np.ones((4, 4, 1), int))
        texture = np.clip(np.array(colour) + detail[:h], 0, 255).astype(np.uint8)
        for t in range(count):
            rgb = np.ascontiguousarray(texture[:, t : t + w])
            frames.append(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pixel_format))
    return frames


def content_cuts(frames, min_scene_frames=15, threshold=27.0):
    detector = ContentCuts(threshold, min_scene_frames, SMALL)
    cuts = [cut for i, frame in enumerate(frames) for cut in detector.push(i, frame)]
    return cuts + list(detector.finish(len(frames)))


@pytest.mark.parametrize("min_scene_frames", [0, 3, 15])
def test_content_scores_and_cuts_are_pyscenedetects(min_scene_frames):
    frames = shots(SHOTS)
    reference = ContentDetector(threshold=27.0, min_scene_len=min_scene_frames)
    reference.stats_manager = stats = StatsManager()
    small, ours = SmallFrames(SMALL), ContentCuts(27.0, min_scene_frames, SMALL)
    expected, scores = [], []
    for i, frame in enumerate(frames):
        timecode = FrameTimecode(i, 24.0)
        expected += [c.frame_num for c in reference.process_frame(timecode, small.bgr(frame).copy())]
        expected_score = stats.get_metrics(timecode, ["content_val"])[0] if i else 0.0
        scores.append((ours.score(frame), expected_score))
    expected += [c.frame_num for c in reference.post_process(FrameTimecode(len(frames) - 1, 24.0))]
    ours_scores, expected_scores = np.array(scores).T
    assert np.allclose(ours_scores, expected_scores, rtol=0, atol=1e-9)
    assert content_cuts(frames, min_scene_frames) == expected
    assert len(expected) >= 4  # the shots do end in cuts (some merged or held back by the minimum length)


def test_the_minimum_scene_length_merges_as_pyscenedetect_does():
    rng = np.random.default_rng(0)
    for trial in range(200):
        length, share = int(rng.integers(0, 20)), rng.uniform(0.02, 0.4)
        above = rng.random(int(rng.integers(1, 300))) < share
        reference, ours = FlashFilter(FlashFilter.Mode.MERGE, length), MinSceneLength(length)
        expected = [c.frame_num for i, a in enumerate(above) for c in reference.filter(FrameTimecode(i, 24.0), a)]
        assert [cut for i, a in enumerate(above) for cut in ours(i, bool(a))] == expected, (trial, length)


def test_every_pixel_format_gives_the_same_cuts():
    cuts = content_cuts(shots(SHOTS))
    assert content_cuts(shots(SHOTS, pixel_format="yuv444p")) == cuts
    assert content_cuts(shots(SHOTS, size=(95, 63))) == cuts  # odd sizes take the decoder's scaler too


def test_adaptive_detector_finds_known_cuts_within_one_frame(tmp_path):
    video = mf.scenes_video(tmp_path / "cuts.mp4", [40, 55, 30, 45])
    info = analyze(str(video), video.name, AnalysisConfig(detector="adaptive", scene_threshold=3.0, min_seconds=1.0))
    expected = [40, 95, 125]
    assert len(info.cuts) == len(expected)
    assert all(abs(got - want) <= 1 for got, want in zip(info.cuts, expected, strict=True))
