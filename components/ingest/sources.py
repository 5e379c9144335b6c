"""Input discovery for ingest: which media files a run reads, from folders, globs, list files, files and URLs.

Local paths and fsspec URLs (s3://, gs://, ...) are expanded the same way; files whose suffix is not a known
video, image or audio suffix are returned separately so the run can report them.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import fsspec

from components.ingest.media import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".gif")
AUDIO_SUFFIXES = (".m4a", ".mp3", ".wav", ".aac", ".flac", ".ogg", ".opus")  # scanned so they are reported
LIST_SUFFIXES = (".txt", ".lst", ".list")


def is_remote(spec: str) -> bool:
    """Whether `spec` is an fsspec URL other than file://."""
    return "://" in spec and not spec.startswith("file://")


def discover(inputs: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """(media sources, ignored files) from folders, globs, list files, single files and fsspec URLs."""
    sources: list[str] = []
    ignored: list[str] = []
    media = VIDEO_SUFFIXES + IMAGE_SUFFIXES + AUDIO_SUFFIXES

    def from_listing(paths):
        for p in sorted(paths):
            (sources if p.lower().endswith(media) else ignored).append(p)

    for spec in inputs:
        if is_remote(spec):
            fs, _, _ = fsspec.get_fs_token_paths(spec)
            protocol = spec.split("://", 1)[0]
            if any(ch in spec for ch in "*?["):
                from_listing(f"{protocol}://{p}" for p in fs.glob(spec))
            elif fs.isdir(spec):
                from_listing(f"{protocol}://{p}" for p in fs.find(spec))
            else:
                sources.append(spec)
        elif any(ch in spec for ch in "*?["):
            from_listing(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p) or os.path.islink(p))
        elif os.path.isdir(spec):
            from_listing(
                str(p) for p in Path(spec).rglob("*") if (p.is_file() or p.is_symlink()) and not p.name.startswith(".")
            )
        elif spec.lower().endswith(LIST_SUFFIXES) and os.path.isfile(spec):
            lines = [ln.strip() for ln in Path(spec).read_text().splitlines()]
            base = Path(spec).parent
            for ln in lines:
                if ln and not ln.startswith("#"):
                    sources.append(ln if is_remote(ln) or os.path.isabs(ln) else str(base / ln))
        else:
            sources.append(spec)  # a single file: analyzed whatever its suffix, so a bad one is reported
    return list(dict.fromkeys(sources)), ignored
