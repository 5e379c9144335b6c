"""What a version says of weights trained elsewhere: an imported Open-Sora 1.0 model's card and tags name the file
and its hash, and no training run."""

import json

from components.register.register import RegisterConfig, lineage_tags, model_card

IMPORT = {"imported_from": "hpcai-tech/Open-Sora/OpenSora-v1-HQ-16x512x512.pth", "format": "opensora-v1",
          "checkpoint_sha256": "ab" * 32, "pixels": 512, "frames": 16, "training_runs": []}  # fmt: skip


def test_an_imported_models_card_and_tags_name_the_file_and_no_training_run(tmp_path):
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "lineage.json").write_text(json.dumps([IMPORT]))
    data = tmp_path / "latents"
    data.mkdir()
    evaluation = {"metrics": {"val_loss": 0.5}, "data": {"key": "k", "folder": str(data)}}
    card = model_card(folder, evaluation, {"promoted": True, "reason": "the first version"})
    assert card.startswith("Text-to-video STDiT pipeline, 0 training stage(s).")
    assert f"Imported from {IMPORT['imported_from']} (opensora-v1, sha256 {'ab' * 32}): trained elsewhere" in card
    assert "Training: none here." in card
    cfg = RegisterConfig(model=str(folder), evaluation=str(tmp_path / "evaluation"), dvc_lock=str(tmp_path / "x"))
    tags = lineage_tags(cfg, folder, evaluation)
    assert tags["imported_from"] == IMPORT["imported_from"] and tags["imported_sha256"] == "ab" * 32
    assert not [k for k in tags if k.startswith("stage")]
