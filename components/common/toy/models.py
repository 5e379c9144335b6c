"""A models volume for the toy world: a folder shaped like the cluster's `t2v-models` volume (`root/hf` is HF_HOME,
a Hugging Face cache) holding tiny random models, saved in their libraries' own formats under the production hub
ids (model.weights.hub.PRODUCTION_MODELS). With HF_HOME=root/hf and HF_HUB_OFFLINE=1 every step runs its production
settings, ids included, through its production loaders, as on the cluster.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.common.files import atomic_path
from components.common.toy import tiny
from model.weights.hub import PRODUCTION_MODELS, parse, stage

MARKER = "toy-models.json"  # {id: the builder arguments it was staged with}


@dataclass(frozen=True)
class ToyModelSizes:
    """What a training recipe on this volume must match: the text width (the T5's d_model, PixArt's caption
    channels) and the PixArt transformer that stage 1 imports (its width is heads x head_dim)."""

    text_channels: int = 32
    pixart_layers: int = 2
    pixart_heads: int = 2
    pixart_head_dim: int = 16
    pixart_sample_size: int = 8
    pixart_patch_size: int = 2


CLIP_WIDTH = 16  # build_tiny_clip's projection_dim: the aesthetic head's input


def _builders(sizes: ToyModelSizes) -> dict[str, tuple[dict, object]]:
    """{hub id: (the arguments that identify the build, build(path) -> saved folder or file)}."""
    pixart = {
        "num_layers": sizes.pixart_layers,
        "num_attention_heads": sizes.pixart_heads,
        "attention_head_dim": sizes.pixart_head_dim,
        "caption_channels": sizes.text_channels,
        "sample_size": sizes.pixart_sample_size,
        "patch_size": sizes.pixart_patch_size,
    }
    m = PRODUCTION_MODELS
    return {
        m["caption.model"]: ({}, tiny.build_tiny_llava_next),
        m["precompute.vae"]: ({}, tiny.build_tiny_vae),
        m["precompute.text_encoder"]: (
            {"d_model": sizes.text_channels},
            lambda p: tiny.build_tiny_t5(p, d_model=sizes.text_channels),
        ),
        m["pixart"]: (pixart, lambda p: tiny.build_tiny_pixart(p, **pixart)),
        m["ingest.aesthetic_model"]: ({}, tiny.build_tiny_clip),
        m["ingest.aesthetic_head"]: (
            {"width": CLIP_WIDTH, "calibrated": 5.0},
            lambda p: tiny.build_tiny_aesthetic_head(p, CLIP_WIDTH),
        ),
        m["ingest.ocr_model"]: ({}, tiny.build_tiny_db_detector),
        m["evaluate.clip_model"]: ({}, tiny.build_tiny_clip),  # the same id as the aesthetic scorer's: built once
        m["evaluate.fvd_model"]: ({}, tiny.build_tiny_i3d),
        m["evaluate.fvd_videomae"]: ({}, tiny.build_tiny_videomae),
    }


def _staged(cache: Path, spec: str) -> bool:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, filename = parse(spec)
    try:
        if filename:
            hf_hub_download(repo_id, filename, cache_dir=cache, local_files_only=True)
        else:
            snapshot_download(repo_id, cache_dir=cache, local_files_only=True)
    except LocalEntryNotFoundError:
        return False
    return True


def build_models_volume(root: str | Path, sizes: ToyModelSizes = ToyModelSizes()) -> dict[str, str]:
    """Stage every production model as a tiny one under `root`/hf (HF_HOME), once: a model already staged with the
    same arguments is kept. Returns {setting: hub id} (the keys of model.weights.hub.PRODUCTION_MODELS)."""
    root = Path(root)
    hf_home = root / "hf"
    marker = root / MARKER
    done = json.loads(marker.read_text()) if marker.exists() else {}
    todo = {
        spec: (args, build)
        for spec, (args, build) in _builders(sizes).items()
        if done.get(spec) != args or not _staged(hf_home / "hub", spec)
    }
    if todo:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as work:
            for i, (spec, (args, build)) in enumerate(todo.items()):
                repo_id, filename = parse(spec)
                out = Path(work) / str(i)
                saved = build(out / filename if filename else out)
                stage(saved, repo_id, hf_home, filename)
                done[spec] = args
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps(done, indent=1, sort_keys=True))
    return dict(PRODUCTION_MODELS)
