"""Loading a saved pipeline folder: through diffusers' entry point, DiffusionPipeline.from_pretrained, trusting only
the code file that T2VPipeline.save_pretrained writes; older folders load too, each with a warning saying how to
re-save them (model.inference.folder describes the files)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from diffusers import DiffusionPipeline

from model.inference.folder import CODE, CODE_FILE, loading_kwargs
from model.inference.pipeline import T2VPipeline

log = logging.getLogger(__name__)

RESAVE = "T2VPipeline.from_pretrained(old).save_pretrained(new)"
# a folder saved before model/ was split by concern names its classes' modules, and imports the pipeline, from here
MOVED = {"model.stdit": "model.networks.stdit", "model.encoders": "model.weights.encoders"}
EARLIER_CODE = CODE.replace("model.inference.pipeline", "model.pipeline")


def load_pipeline(folder: str | Path, **kwargs) -> T2VPipeline:
    """A saved pipeline folder through diffusers' entry point, DiffusionPipeline.from_pretrained, which runs the
    folder's code file: only the one save_pretrained writes is trusted. A folder in the earlier format loads
    through T2VPipeline, and one saved before model/ was split by concern through a view naming today's modules,
    each with a warning."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"{folder} is not a pipeline folder (no model_index.json)")
    with tempfile.TemporaryDirectory() as tmp:
        if (view := with_todays_modules(folder, Path(tmp))) != folder:
            log.warning("%s names modules of an earlier layout of this package: re-save it with %s", folder, RESAVE)
        return _load(view, **kwargs)


def _load(folder: Path, **kwargs) -> T2VPipeline:
    index = json.loads((folder / "model_index.json").read_text())
    if not isinstance(index.get("_class_name"), list):
        log.warning(
            "%s is in the earlier pipeline format, which DiffusionPipeline.from_pretrained cannot load: re-save it "
            "with %s",
            folder,
            RESAVE,
        )
        return T2VPipeline.from_pretrained(folder, **kwargs)
    trusted = loading_kwargs(folder)
    if not trusted:
        raise ValueError(
            f"{folder}: {index['_class_name'][0]}.py is not the code file T2VPipeline.save_pretrained writes; if you "
            "trust it, load it with DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)"
        )
    return DiffusionPipeline.from_pretrained(folder, **trusted, **kwargs)


def with_todays_modules(folder: Path, into: Path) -> Path:
    """`folder` when it names today's modules; for a folder saved before model/ was split by concern, a view of it in
    `into` (links to its files, model_index.json and the code file rewritten with today's module names)."""
    index = json.loads((folder / "model_index.json").read_text())
    moved = {k: [MOVED[v[0]], v[1]] for k, v in index.items() if isinstance(v, list) and v and v[0] in MOVED}
    code = folder / CODE_FILE
    earlier_code = code.is_file() and code.read_text() == EARLIER_CODE
    if not moved and not earlier_code:
        return folder
    for entry in folder.iterdir():
        if entry.name not in ("model_index.json", CODE_FILE):
            (into / entry.name).symlink_to(entry.resolve())
    (into / "model_index.json").write_text(json.dumps({**index, **moved}, indent=2, sort_keys=True) + "\n")
    if code.is_file():
        (into / CODE_FILE).write_text(CODE if earlier_code else code.read_text())
    return into
