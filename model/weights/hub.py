"""Where pretrained weights come from: one rule for every model setting.

A model spec is a local path (a model folder or a file) or a Hugging Face hub id: `ORG/NAME` for a repository,
`ORG/NAME/PATH` for one file in it (e.g. `flateon/FVD-I3D-torchscript/i3d_torchscript.pt`). `resolve` turns a spec
into a local path: a path as it is, a hub id into its snapshot folder (or the file) in the Hugging Face cache. On a
cluster the cache is the read-only models volume (`HF_HOME=/mnt/models/hf`, `HF_HUB_OFFLINE=1`, docs/cluster.md
step 4): what is not staged there fails at once, naming the id, the cache and the command that stages it. Online,
a repository that is not cached is left to transformers/diffusers to download, and a file is downloaded here.

The cache location and offline mode are read from the environment at each call, not from huggingface_hub's
constants (computed once, at import), so a process that changes HF_HOME uses the new cache.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import tempfile
from pathlib import Path

# The production models by setting (`ingest.ocr_model` etc.; `pixart` is train's `model.init=pixart:<id>`).
PRODUCTION_MODELS = {
    "caption.model": "llava-hf/llava-v1.6-mistral-7b-hf",
    "precompute.vae": "stabilityai/sd-vae-ft-ema",
    "precompute.text_encoder": "DeepFloyd/t5-v1_1-xxl",
    "pixart": "PixArt-alpha/PixArt-XL-2-512x512",
    "ingest.aesthetic_model": "openai/clip-vit-large-patch14",
    # LAION's improved aesthetic predictor head, for CLIP ViT-L/14 embeddings
    "ingest.aesthetic_head": "camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth",
    # OpenCV zoo's DB text detector (PP-OCRv3 det), the successor of its DB_IC15/TD500 models
    "ingest.ocr_model": "opencv/text_detection_ppocr/text_detection_en_ppocrv3_2023may.onnx",
    "evaluate.clip_model": "openai/clip-vit-large-patch14",
    "evaluate.fvd_model": "flateon/FVD-I3D-torchscript/i3d_torchscript.pt",
    "evaluate.fvd_videomae": "MCG-NJU/videomae-base",
}
DOCS = 'docs/cluster.md step 4, "Stage the pretrained weights"'


class ModelNotFound(ValueError):
    """A model spec that is neither a local path nor available from the hub (cache) here."""

    def __init__(self, message: str, spec: str = "", command: str | None = None):
        super().__init__(message)
        self.spec, self.command = spec, command


def hf_home() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HOME") or constants.HF_HOME).expanduser()


def hub_cache() -> Path:
    """The hub cache folder this process reads now: HF_HUB_CACHE, else HF_HOME/hub."""
    from huggingface_hub import constants

    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("HF_HOME"):
        return hf_home() / "hub"
    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def parse(spec: str) -> tuple[str, str | None] | None:
    """(repo id, file path in the repo or None) for a spec shaped like a hub id, else None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not spec or spec.startswith(("/", ".", "~")) or "\\" in spec or "://" in spec:
        return None
    parts = spec.split("/")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    if filename is not None and (not all(parts[2:]) or ".." in parts[2:]):
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id, filename


def stage_command(repo_id: str, filename: str | None = None) -> str:
    """The command that puts a hub model into this process's cache (what docs/cluster.md step 4 runs)."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        env = f"HF_HUB_CACHE={shlex.quote(str(hub_cache()))}"
    else:
        env = f"HF_HOME={shlex.quote(str(hf_home()))}"
    file = f" {shlex.quote(filename)}" if filename else ""
    return f"{env} hf download {repo_id}{file}"


def resolve(spec: str) -> str:
    """A local path for `spec`: an existing path as it is, a hub id as its folder (or file) in the HF cache.

    Offline, a hub id that is not cached raises ModelNotFound; online, a repository id that is not cached comes back
    unchanged (transformers/diffusers download it) and a hub file is downloaded into the cache."""
    local = Path(spec).expanduser()
    if local.exists():
        return str(local) if spec.startswith("~") else spec
    hub = parse(spec)
    if hub is None:
        raise ModelNotFound(f"{spec}: no such file or folder, and not a hub id (ORG/NAME or ORG/NAME/FILE)", spec)
    repo_id, filename = hub
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = hub_cache()
    try:
        if filename is None:
            return snapshot_download(repo_id, cache_dir=cache, local_files_only=True)
        return hf_hub_download(repo_id, filename, cache_dir=cache, local_files_only=True)
    except LocalEntryNotFoundError as error:
        # huggingface_hub knows the snapshot is partial (its cached tree lists more files): the loader finds what
        # it needs there or names the file it misses
        if getattr(error, "snapshot_path", None):
            return str(error.snapshot_path)
    command = stage_command(repo_id, filename)
    what = f"file {filename} of hub model {repo_id}" if filename else f"hub model {repo_id}"
    if offline():
        raise ModelNotFound(
            f"{spec}: not a local path, and the {what} is not in the Hugging Face cache {cache} "
            f"(HF_HOME={hf_home()}) while the hub is offline (HF_HUB_OFFLINE=1). Stage it there with "
            f"`{command}` (see {DOCS}), or give a local path.",
            spec,
            command,
        )
    if filename is None:
        return spec
    try:
        return hf_hub_download(repo_id, filename, cache_dir=cache)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise ModelNotFound(
            f"{spec}: not a local path, and the {what} could not be downloaded into {cache} "
            f"({type(error).__name__}: {error}); check the id, or stage it with `{command}` (see {DOCS})",
            spec,
            command,
        ) from error


def missing(specs) -> list[str]:
    """The specs (None and "" skipped) that do not resolve here."""
    out = []
    for spec in specs:
        if not spec:
            continue
        try:
            resolve(spec)
        except ModelNotFound:
            out.append(spec)
    return out


def require(specs: dict[str, str | None]) -> None:
    """Check {setting: spec} at once (None and "" skipped): one ModelNotFound naming every model that is missing,
    its setting and the command that stages it, so that a task fails at its start rather than at its third model."""
    problems = []
    for setting, spec in specs.items():
        if not spec:
            continue
        try:
            resolve(spec)
        except ModelNotFound as error:
            problems.append((setting, error))
    if not problems:
        return
    lines = [f"  {setting}: {error}" for setting, error in problems]
    commands = [error.command for _, error in problems if error.command]
    how = "".join(f"\n  {c}" for c in commands)
    how = f"\nStage them with:{how}\n(see {DOCS})" if commands else ""
    raise ModelNotFound(
        f"{len(problems)} model(s) not found (hub cache {hub_cache()}, offline={offline()}):\n"
        + "\n".join(lines)
        + how,
        ", ".join(error.spec for _, error in problems),
        " && ".join(commands) or None,
    )


# ----------------------------------------------------------------------------------------------- staging


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _add_blob(blobs: Path, source: Path) -> str:
    """Copy `source` into blobs/ under its content hash (atomically; kept when there already); its hash."""
    digest = file_sha256(source)
    target = blobs / digest
    if not target.exists():
        fd, tmp = tempfile.mkstemp(prefix=f".{digest}.", dir=blobs)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return digest


def _snapshot_entries(snapshot: Path, blobs: Path) -> dict[str, str]:
    """{path in repo: blob hash} of an existing snapshot (files that are not links into blobs/ are added there)."""
    entries = {}
    for file in snapshot.rglob("*"):
        if file.is_file():
            target = file.resolve()
            in_blobs = target.parent == blobs.resolve()
            entries[file.relative_to(snapshot).as_posix()] = target.name if in_blobs else _add_blob(blobs, target)
    return entries


def stage(source: str | Path, repo_id: str, hf_home: str | Path, filename: str | None = None) -> Path:
    """Copy a saved model folder (or one file, as `filename` in the repo, by default its name) into the Hugging Face
    cache under `hf_home` laid out as huggingface_hub's downloads are: `hub/models--ORG--NAME/blobs/<sha256>`,
    `snapshots/<revision>/<path>` linked to its blob, `refs/main` naming the revision. The revision is a hash of the
    content (the same content stages to the same revision); files of the current snapshot that are not replaced
    stay, as with a second `hf download`. Returns the snapshot folder (a folder) or the staged file (a file)."""
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(repo_id)
    source = Path(source)
    if not source.exists():
        raise ValueError(f"stage: {source} does not exist")
    storage = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    blobs, snapshots, refs = storage / "blobs", storage / "snapshots", storage / "refs"
    for folder in (blobs, snapshots, refs):
        folder.mkdir(parents=True, exist_ok=True)

    entries = {}
    main = refs / "main"
    if main.exists() and (snapshots / main.read_text().strip()).is_dir():
        entries = _snapshot_entries(snapshots / main.read_text().strip(), blobs)
    if source.is_dir():
        new = {f.relative_to(source).as_posix(): f for f in sorted(source.rglob("*")) if f.is_file()}
    else:
        new = {filename or source.name: source}
    entries |= {path: _add_blob(blobs, file) for path, file in new.items()}
    revision = hashlib.sha1("".join(f"{p}\0{h}\n" for p, h in sorted(entries.items())).encode()).hexdigest()

    snapshot = snapshots / revision
    if not snapshot.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{revision}-", dir=snapshots))
        try:
            for path, digest in entries.items():
                link = tmp / path
                link.parent.mkdir(parents=True, exist_ok=True)
                # relative, as huggingface_hub makes them: the cache can move (or be mounted elsewhere)
                os.symlink(os.path.relpath(blobs / digest, (snapshot / path).parent), link)
            tmp.chmod(0o755)
            try:
                tmp.rename(snapshot)
            except OSError:
                if not snapshot.exists():  # else another writer staged the same content first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    fd, tmp_ref = tempfile.mkstemp(prefix=".main.", dir=refs)
    with os.fdopen(fd, "w") as f:
        f.write(revision)
    os.chmod(tmp_ref, 0o644)
    os.replace(tmp_ref, main)
    return snapshot if source.is_dir() else snapshot / (filename or source.name)
