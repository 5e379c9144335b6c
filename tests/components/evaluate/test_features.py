"""Weight-based metrics on tiny random models, each against a computation of its own definition."""

import sys

import numpy as np
import pytest

from components.common.toy.tiny import build_tiny_clip, build_tiny_i3d, build_tiny_videomae
from components.evaluate.features import (
    CLIPScorer,
    I3DFeatures,
    VideoMAEFeatures,
    frechet_distance,
    vbench_available,
    vbench_scores,
)


@pytest.fixture(scope="module")
def videos():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8) for _ in range(4)]


def direct_clip_score(scorer: CLIPScorer, video: np.ndarray, prompt: str) -> float:
    """CLIPScore from CLIP's own forward pass: its image-text logits divided by its logit scale are the cosines."""
    import torch

    text = scorer.tokenizer([prompt], return_tensors="pt")
    pixels = scorer.processor(images=list(video), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = scorer.model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels)
        cosines = (out.logits_per_image[:, 0] / scorer.model.logit_scale.exp()).numpy()  # one per frame
    return float(np.mean([100 * max(c, 0.0) for c in cosines]))


def test_clip_score_is_100_times_the_frames_mean_positive_cosine(tmp_path):
    """Grey frames from black to white: with this tiny CLIP, the dark frames' cosines to the prompt are negative
    (counted as 0) and the light frames' positive, so both halves of the definition are exercised."""
    scorer = CLIPScorer(str(build_tiny_clip(tmp_path / "clip", seed=2)))
    ramp = np.stack([np.full((32, 32, 3), level, np.uint8) for level in (0, 60, 120, 180, 255)])
    noise = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    for video in (ramp, noise):
        for prompt in ("a red circle moves left on a black background", "green"):
            expected = direct_clip_score(scorer, video, prompt)
            assert scorer(video, prompt) == pytest.approx(expected, abs=1e-4), prompt
    text = scorer.tokenizer(["green"], return_tensors="pt")
    pixels = scorer.processor(images=list(ramp), return_tensors="pt")["pixel_values"]
    cosines = scorer.model(**text, pixel_values=pixels).logits_per_image[:, 0]
    assert (cosines < 0).any() and (cosines > 0).any()  # the case above needs both signs
    assert 0 < scorer(ramp, "green") < 100


def gaussian_frechet(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """The closed form, through eigenvalues: Tr((A B)^(1/2)) is the sum of the square roots of the eigenvalues of
    A^(1/2) B A^(1/2) (symmetric, positive semi-definite), so no matrix square root of a product is needed."""
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    cross = np.sum(np.sqrt(np.clip(inner, 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu_a, mu_b = rng.normal(0, 1, d), rng.normal(0, 1, d)
    m_a, m_b = rng.normal(0, 1, (d, d)), rng.normal(0, 1, (d, d))
    cov_a, cov_b = m_a @ m_a.T / d + 0.1 * np.eye(d), m_b @ m_b.T / d + 0.1 * np.eye(d)  # correlated, unequal
    a = rng.multivariate_normal(mu_a, cov_a, 20000)
    b = rng.multivariate_normal(mu_b, cov_b, 20000)
    # exactly the closed form of the samples' own means and covariances ...
    sample = gaussian_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(sample, rel=1e-6)
    # ... and, with 20,000 samples, close to that of the true Gaussians
    assert frechet_distance(a, b) == pytest.approx(gaussian_frechet(mu_a, cov_a, mu_b, cov_b), rel=0.05)
    shift = np.array([3.0, 0, 0, 0, 0, 0])  # same Gaussian shifted: the squared shift alone
    assert frechet_distance(a, a + shift) == pytest.approx(9.0, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 videos"):
        frechet_distance(a[:1], b)


@pytest.mark.parametrize("kind", ["i3d", "videomae"])
def test_fvd_on_video_features_is_zero_for_the_same_videos_and_grows_with_a_shift(tmp_path, videos, kind):
    if kind == "i3d":
        extract = I3DFeatures(str(build_tiny_i3d(tmp_path / "i3d.pt")))
    else:
        extract = VideoMAEFeatures(str(build_tiny_videomae(tmp_path / "videomae")))
    feats = extract(videos)
    assert feats.shape[0] == 4 and feats.ndim == 2 and np.isfinite(feats).all()
    assert extract(videos[:1])[0] == pytest.approx(feats[0], rel=1e-5)  # one video's features, alone or in a batch
    assert frechet_distance(feats, feats) == pytest.approx(0, abs=1e-6)
    # features moved by a constant: same covariance, so the distance is the squared length of the move (the
    # features' covariance from 4 videos is singular, the case the regularisation is there for)
    shift = np.full(feats.shape[1], 0.5)
    assert frechet_distance(feats, feats + shift) == pytest.approx(float(shift @ shift), rel=1e-3)


def test_a_missing_fvd_model_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"i3d_torchscript\.pt"):
        I3DFeatures(str(tmp_path / "missing.pt"))


def test_vbench_is_skipped_with_the_reason_without_its_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vbench" else real(name, *a))
    assert "pip install vbench" in vbench_available()


FAKE_VBENCH = """
import json
from pathlib import Path


class VBench:
    def __init__(self, device, full_info_dir, output_path):
        assert Path(full_info_dir).name == "VBench_full_info.json" and Path(full_info_dir).is_file()
        self.output_path = Path(output_path)

    def evaluate(self, videos_path, name, dimension_list, mode):
        assert mode == "custom_input"
        videos = sorted(Path(videos_path).glob("*.mp4"))
        # VBench's result file: per dimension, [mean score, per-video records]
        results = {dim: [0.25 + i / 10, [{"video_path": str(v), "video_results": 0.5} for v in videos]]
                   for i, dim in enumerate(dimension_list)}
        (self.output_path / f"{name}_eval_results.json").write_text(json.dumps(results))
"""


def test_vbench_scores_are_read_from_its_results_file(tmp_path, monkeypatch):
    """A stand-in `vbench` package with VBench's interface and result format: the adapter passes the custom-input
    mode and its info file, and reports each dimension's mean score."""
    package = tmp_path / "site" / "vbench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_VBENCH)
    (package / "VBench_full_info.json").write_text("[]")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "vbench", raising=False)
    assert vbench_available() is None
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    out.mkdir()
    (videos / "a red circle moves left.mp4").write_bytes(b"")
    scores = vbench_scores(videos, ("motion_smoothness", "subject_consistency"), out, "cpu")
    assert scores == {"vbench/motion_smoothness": 0.25, "vbench/subject_consistency": pytest.approx(0.35)}
