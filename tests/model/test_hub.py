"""One rule for model specs: a local path, or a hub id looked up in the Hugging Face cache (staged here as
huggingface_hub lays it out, and checked with huggingface_hub itself)."""

from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

from model.weights import hub
from model.weights.hub import ModelNotFound, missing, parse, require, resolve, stage


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "saved"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"width": 4}')
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    return folder


def test_a_local_path_is_itself(tmp_path, hf_home, model_dir):
    assert resolve(str(model_dir)) == str(model_dir)
    (tmp_path / "head.pth").write_bytes(b"x")
    assert resolve(str(tmp_path / "head.pth")) == str(tmp_path / "head.pth")


def test_hub_ids_and_file_ids_parse():
    assert parse("org/name") == ("org/name", None)
    assert parse("org/name/sub/file.onnx") == ("org/name", "sub/file.onnx")
    assert parse("camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth")[1].startswith("sac+")
    for local in ("/abs/model", "./model", "~/model", "org/name/../x", "org//x"):
        assert parse(local) is None, local


def test_a_staged_repo_resolves_to_its_snapshot_as_huggingface_hub_reads_it(hf_home, model_dir):
    snapshot = stage(model_dir, "org/name", hf_home)
    assert snapshot.parent.name == "snapshots" and len(snapshot.name) == 40
    assert resolve("org/name") == str(snapshot)
    assert (Path(resolve("org/name")) / "sub" / "weights.bin").read_bytes() == b"\x00\x01"
    cache = hf_home / "hub"
    assert snapshot_download("org/name", cache_dir=cache, local_files_only=True) == str(snapshot)
    assert (cache / "models--org--name" / "refs" / "main").read_text() == snapshot.name
    info = scan_cache_dir(cache)
    assert not info.warnings
    (repo,) = info.repos
    (revision,) = repo.revisions
    assert repo.repo_id == "org/name" and revision.refs == {"main"} and len(revision.files) == 2
    assert stage(model_dir, "org/name", hf_home) == snapshot  # same content, same revision


def test_a_staged_file_resolves_and_staging_adds_to_a_repo(hf_home, model_dir, tmp_path):
    (tmp_path / "head.pth").write_bytes(b"head")
    staged = stage(tmp_path / "head.pth", "org/heads", hf_home, "sac+logos.pth")
    assert resolve("org/heads/sac+logos.pth") == str(staged)
    assert Path(resolve("org/heads/sac+logos.pth")).read_bytes() == b"head"
    assert hf_hub_download("org/heads", "sac+logos.pth", cache_dir=hf_home / "hub", local_files_only=True)
    (tmp_path / "other.onnx").write_bytes(b"onnx")
    stage(tmp_path / "other.onnx", "org/heads", hf_home, "det/other.onnx")
    assert Path(resolve("org/heads/det/other.onnx")).read_bytes() == b"onnx"
    assert Path(resolve("org/heads/sac+logos.pth")).read_bytes() == b"head"  # the first file stays


def test_a_missing_hub_model_names_the_id_the_cache_and_the_command(hf_home):
    with pytest.raises(ModelNotFound) as caught:
        resolve("org/absent")
    message = str(caught.value)
    assert "org/absent" in message and str(hf_home / "hub") in message
    assert f"HF_HOME={hf_home} hf download org/absent" in message and "docs/cluster.md step 4" in message
    with pytest.raises(ModelNotFound, match=f"HF_HOME={hf_home} hf download org/files i3d_torchscript.pt"):
        resolve("org/files/i3d_torchscript.pt")
    with pytest.raises(ValueError, match="no such file or folder"):  # ModelNotFound is a ValueError
        resolve("/no/such/model")


def test_the_cache_is_read_from_the_environment_at_each_call(tmp_path, hf_home, model_dir, monkeypatch):
    stage(model_dir, "org/name", hf_home)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelNotFound, match="elsewhere"):
        resolve("org/name")
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))  # wins over HF_HOME, as in huggingface_hub
    assert resolve("org/name").startswith(str(hf_home / "hub"))


def test_online_an_uncached_repo_is_left_to_the_loader(hf_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.offline()
    assert resolve("org/not-cached") == "org/not-cached"  # transformers/diffusers download it


def test_require_names_every_missing_model_with_its_setting(hf_home, model_dir):
    stage(model_dir, "org/name", hf_home)
    specs = {
        "caption.model": "org/name",
        "ingest.ocr_model": "opencv/text_detection_ppocr/text_detection_en_ppocrv3_2023may.onnx",
        "evaluate.fvd_videomae": "MCG-NJU/videomae-base",
        "evaluate.clip_model": None,  # off
    }
    assert missing(specs.values()) == [specs["ingest.ocr_model"], specs["evaluate.fvd_videomae"]]
    with pytest.raises(ModelNotFound) as caught:
        require(specs)
    message = str(caught.value)
    assert message.startswith("2 model(s) not found")
    assert "ingest.ocr_model: opencv/text_detection_ppocr/" in message and "evaluate.fvd_videomae: MCG" in message
    assert "hf download opencv/text_detection_ppocr text_detection_en_ppocrv3_2023may.onnx" in message
    assert "hf download MCG-NJU/videomae-base" in message and "caption.model" not in message
    require({"caption.model": "org/name"})
