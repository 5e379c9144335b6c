"""The folder a T2VPipeline is saved in, as files: its code file, the arguments that load it, and writing an encoder
that it references into it (model.inference.pipeline has the pipeline itself)."""

from __future__ import annotations

import json
from pathlib import Path

from model.weights.encoders import load_text_encoder, load_vae_model

CODE_FILE = "t2v_pipeline.py"
CODE = '''"""The T2V pipeline in this folder is defined by the t2v-pipeline package (pip install t2v-pipeline):
DiffusionPipeline.from_pretrained(folder, trust_remote_code=True) imports it through this file."""

from model.inference.pipeline import T2VPipeline, T2VPipelineOutput  # noqa: F401
'''
# each encoder and the components it is made of; a reference (its spec) stands for all of them
ENCODERS = {"vae": ("vae",), "text_encoder": ("text_encoder", "tokenizer")}


def loading_kwargs(folder: Path) -> dict:
    """from_pretrained arguments for a saved folder: trust_remote_code when its code file is the one save_pretrained
    writes; for the earlier format, the encoders it bundled (specs relative to the folder), loaded from inside it."""
    index = json.loads((folder / "model_index.json").read_text())
    if isinstance(index.get("_class_name"), list):
        code = folder / f"{index['_class_name'][0]}.py"
        return {"trust_remote_code": True} if code.is_file() and code.read_text() == CODE else {}
    out = {}
    for role in ENCODERS:
        spec = index.get(f"{role}_spec")
        if spec and not Path(spec).is_absolute() and (folder / spec).exists():
            # given as components, without a spec: saving the pipeline writes them, the folder was their source
            out.update(load_encoder(str(folder / spec), role), **{f"{role}_spec": None})
    return out


def load_encoder(spec: str, role: str) -> dict:
    """The components of encoder `role` ("vae", or "text_encoder" with its tokenizer) loaded from a spec."""
    if role == "vae":
        return {"vae": load_vae_model(spec)}
    tokenizer, model = load_text_encoder(spec)
    return {"text_encoder": model, "tokenizer": tokenizer}


def _library(module) -> str:
    """The library model_index.json names for a component (diffusers' rule)."""
    top = type(module).__module__.split(".")[0]
    return top if top in ("diffusers", "transformers") else type(module).__module__


def write_encoder(folder: str | Path, role: str) -> None:
    """Write the encoder `role` ("vae", or "text_encoder" with its tokenizer) that a saved pipeline folder references
    into the folder, as save_pretrained(write_encoders=True) does, and drop the reference."""
    folder = Path(folder)
    path = folder / "model_index.json"
    index = json.loads(path.read_text())
    for name, module in load_encoder(index[f"{role}_spec"], role).items():
        module.save_pretrained(folder / name)
        index[name] = [_library(module), type(module).__name__]
    index[f"{role}_spec"] = None
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
