"""Tamper evidence for registered versions: what a version held when it was registered, and the check every loader
makes before it reads a weight or a config of it.

At registration `t2v register` downloads the version it just logged and records the sha256 of every file in it (the
pipeline folder, the code, MLflow's own files) as a listing, `files.sha256.json`, an artifact of the register run, and
the sha256 of that listing as the run's parameter `files_sha256`. MLflow refuses to change a logged parameter, and a
version's run cannot be changed after it is created: so the parameter cannot be rewritten by the pipeline identity (or
anyone holding the artifact store's keys), and the listing, which can be, is checked against it. A loader compares the
files it downloaded with the listing and refuses the version naming the first file that differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from model.weights.hub import file_sha256

LISTING = "files.sha256.json"  # an artifact of the register run
PARAM = "files_sha256"  # the register run's parameter: the sha256 of the listing's text
RESTORE = "docs/cluster.md, section 'A version whose files changed'"


class TamperedVersion(ValueError):
    """A registered version's files differ from what was recorded at its registration."""


def file_digests(root: str | Path) -> dict[str, str]:
    """{path relative to `root` (POSIX): sha256} of every file under `root`."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def listing_text(digests: dict[str, str]) -> str:
    """The listing as it is stored: canonical JSON, so that its sha256 is a function of the digests alone."""
    return json.dumps(digests, sort_keys=True, separators=(",", ":")) + "\n"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_files(root: str | Path, digests: dict[str, str], what: str) -> None:
    """Raise TamperedVersion naming the first file under `root` that differs from `digests` (changed, added or
    removed); `what` names the version ("version 3 of t2v-stdit")."""
    found = file_digests(root)
    for path in sorted(set(found) | set(digests)):
        if found.get(path) == digests.get(path):
            continue
        if path not in found:
            change = "was removed"
        elif path not in digests:
            change = "was added"
        else:
            change = f"has sha256 {found[path][:16]}..., not the registered {digests[path][:16]}..."
        raise TamperedVersion(
            f"{what}: {path} {change} since it was registered: its files were changed after registration and it is "
            f"not loaded. The MLflow admin can restore it ({RESTORE}); until then use another version"
        )


def recorded_digests(client, run_id: str | None, what: str) -> dict[str, str] | None:
    """The listing recorded for the version logged by `run_id` (an MlflowClient's view), checked against the run's
    parameter; None for a version registered before listings were recorded (nothing to check against)."""
    if not run_id:
        return None
    expected = client.get_run(run_id).data.params.get(PARAM)
    if expected is None:
        return None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="t2v-listing-") as tmp:
        text = Path(client.download_artifacts(run_id, LISTING, tmp)).read_text()
    if text_sha256(text) != expected:
        raise TamperedVersion(
            f"{what}: the record of its files ({LISTING} of run {run_id}) was changed after registration: its sha256 "
            f"is not the run's {PARAM} parameter. It is not loaded; the MLflow admin can restore it ({RESTORE})"
        )
    return json.loads(text)


def verify_model_folder(model_root: str | Path, client, what: str, run_id: str | None = None) -> bool:
    """Check a downloaded version (the folder holding its MLmodel) against its registration record, before anything
    in it is loaded: the record of `run_id`, the version's run as the registry names it (it cannot change), else of
    the run its MLmodel names (the pyfunc knows no more). True when checked; False for a version registered without a
    record (a warning)."""
    import yaml

    named = yaml.safe_load((Path(model_root) / "MLmodel").read_text()).get("run_id")
    if run_id and named != run_id:
        raise TamperedVersion(
            f"{what}: its MLmodel names run {named}, but the registry's version was logged by run {run_id}: its files "
            f"were changed after registration and it is not loaded. The MLflow admin can restore it ({RESTORE})"
        )
    digests = recorded_digests(client, run_id or named, what)
    if digests is None:
        import logging

        logging.getLogger(__name__).warning("%s was registered without a record of its files: not checked", what)
        return False
    check_files(model_root, digests, what)
    return True
