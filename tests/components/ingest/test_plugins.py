"""Model-based scorers, on tiny models built here and loaded through the production paths."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from components.common import settings
from components.common.toy.tiny import build_tiny_db_detector
from components.ingest.config import IngestConfig
from components.ingest.ingest import ingest
from components.ingest.plugins import AestheticScorer, TextAreaScorer, mlp_from_state_dict
from components.synth.synth import SynthConfig, synth


@pytest.fixture(scope="module")
def aesthetic_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    head = torch.nn.Sequential(
        torch.nn.Linear(16, 8),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(8, 4),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(4, 1),
    )
    torch.save({f"layers.{k}": v for k, v in head.state_dict().items()}, root / "head.pth")
    return root / "clip", root / "head.pth"


@pytest.fixture(scope="module")
def db_detector(tmp_path_factory):
    """An ONNX 'text detector' whose probability map is high on bright pixels: text = white boxes."""
    pytest.importorskip("onnx")
    return build_tiny_db_detector(tmp_path_factory.mktemp("ocr") / "db.onnx")


def test_aesthetic_head_loads_laion_style_state_dicts(aesthetic_files):
    _, head_path = aesthetic_files
    head = mlp_from_state_dict(torch.load(head_path, weights_only=True))
    assert [layer.in_features for layer in head] == [16, 8, 4]


def test_aesthetic_scorer_scores_frames(aesthetic_files):
    clip, head = aesthetic_files
    scorer = AestheticScorer(str(clip), str(head))
    rng = np.random.default_rng(0)
    a = scorer([rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)])
    b = scorer([np.zeros((48, 64, 3), np.uint8)])
    assert np.isfinite(a) and np.isfinite(b) and a != b


def test_text_area_is_the_share_of_the_frame_covered_by_text(db_detector):
    # this detector's map is the text itself, not DB's shrunk kernel: no unclipping gives the exact area
    scorer = TextAreaScorer(str(db_detector), unclip_ratio=0.0)
    blank = np.zeros((256, 256, 3), np.uint8)
    page = blank.copy()
    page[64:128, 32:224] = 255  # 3/16 of the frame
    assert scorer([blank]) == 0.0
    assert scorer([page]) == pytest.approx(3 / 16, abs=0.01)
    assert scorer([page, blank]) == pytest.approx(3 / 32, abs=0.01)
    assert TextAreaScorer(str(db_detector))([page]) > 3 / 16  # DB's unclip grows each box


def test_the_input_normalization_follows_the_detector(db_detector, tmp_path):
    assert TextAreaScorer(str(db_detector)).normalization == "db"  # DB's own statistics
    ppocr = tmp_path / "text_detection_en_ppocrv3_2023may.onnx"
    ppocr.write_bytes(db_detector.read_bytes())
    scorer = TextAreaScorer(str(ppocr), unclip_ratio=0.0)
    assert scorer.normalization == "ppocr"  # PaddleOCR's ImageNet statistics
    page = np.zeros((256, 256, 3), np.uint8)
    page[64:128, 32:224] = 255
    assert scorer([page]) == pytest.approx(3 / 16, abs=0.01)
    with pytest.raises(ValueError, match="normalization='imagenet'"):
        TextAreaScorer(str(db_detector), normalization="imagenet")


def test_ingest_adds_and_filters_on_model_scores(aesthetic_files, db_detector, tmp_path):
    clip, head = aesthetic_files
    toy = synth(SynthConfig(out_dir=str(tmp_path / "toy"), videos=3, images=1))
    cfg = IngestConfig(
        inputs=(str(toy),),
        out_dir=str(tmp_path / "out"),
        aesthetic_model=str(clip),
        aesthetic_head=str(head),
        ocr_model=str(db_detector),
        progress=False,
    )
    ingest(settings.updated(cfg, {"filters.dedup_distance": None}))
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert {"aes", "ocr"} <= set(manifest.columns) and manifest.aes.notna().all()
    threshold = float(manifest.aes.median())
    result = ingest(
        settings.updated(
            cfg, {"filters.dedup_distance": None, "filters.min_aesthetic": threshold, "out_dir": str(tmp_path / "f")}
        )
    )
    rejected = pd.read_parquet(tmp_path / "f" / "rejected_clips.parquet")
    assert result.clips == (manifest.aes >= threshold).sum() and rejected.reason.str.startswith("aesthetic").all()


def test_model_scores_without_a_model_fail_before_any_work(tmp_path):
    cfg = IngestConfig(inputs=(str(tmp_path),), out_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--aesthetic-model"):
        ingest(settings.updated(cfg, {"filters.min_aesthetic": 5.0}))
    with pytest.raises(ValueError, match="--ocr-model"):
        ingest(settings.updated(cfg, {"filters.max_text_area": 0.1}))
    with pytest.raises(ValueError, match="no such file"):
        ingest(settings.updated(cfg, {"ocr_model": str(tmp_path / "missing.onnx")}))
    assert not (tmp_path / "out" / "manifest.parquet").exists()
