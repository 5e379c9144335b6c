"""Weight-based metrics on tiny random models: their code paths, and the Frechet distance itself."""

import numpy as np
import pytest

from components.common.toy.tiny import build_tiny_clip, build_tiny_i3d, build_tiny_videomae
from components.evaluate.features import (
    CLIPScorer,
    I3DFeatures,
    VideoMAEFeatures,
    frechet_distance,
    vbench_available,
)


@pytest.fixture(scope="module")
def videos():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8) for _ in range(4)]


def test_clip_score_is_finite_and_bounded(tmp_path, videos):
    scorer = CLIPScorer(str(build_tiny_clip(tmp_path / "clip")))
    scores = [scorer(v, "a red circle moves left on a black background") for v in videos]
    assert all(0 <= s <= 100 for s in scores)


@pytest.mark.parametrize("kind", ["i3d", "videomae"])
def test_video_features_give_a_finite_distance(tmp_path, videos, kind):
    if kind == "i3d":
        extract = I3DFeatures(str(build_tiny_i3d(tmp_path / "i3d.pt")))
    else:
        extract = VideoMAEFeatures(str(build_tiny_videomae(tmp_path / "videomae")))
    feats = extract(videos)
    assert feats.shape[0] == 4 and np.isfinite(feats).all()
    assert np.isfinite(frechet_distance(feats[:2], feats[2:]))
    assert frechet_distance(feats, feats) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (20000, 2)), rng.normal(0, 1, (20000, 2)) + np.array([3.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(9.0, rel=0.03)
    wide = rng.normal(0, 2, (20000, 2))  # same mean, std 2: 2 * (1 + 4 - 2 * 2) = 2
    assert frechet_distance(a, wide) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="at least 2 videos"):
        frechet_distance(a[:1], b)


def test_a_missing_fvd_model_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"i3d_torchscript\.pt"):
        I3DFeatures(str(tmp_path / "missing.pt"))


def test_vbench_without_its_package_is_skipped_with_the_reason():
    import importlib.util

    if importlib.util.find_spec("vbench") is None:
        assert "pip install vbench" in vbench_available()
    else:
        assert vbench_available() is None
