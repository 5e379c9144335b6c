"""The ingest step's settings: what is analysed, filtered and kept, and how a run fans out over files."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common import settings
from components.common.settings import setting
from components.ingest.filters import FilterConfig
from components.ingest.media import AnalysisConfig
from model.planning.buckets import DEFAULT_BUCKETS, smallest_area

OPEN_SORA_COLUMNS = ("path", "text", "num_frames", "height", "width", "aspect_ratio", "fps", "resolution")
CLIP_MODES = ("rows", "copy", "reencode")


@dataclass(frozen=True)
class IngestConfig:
    inputs: tuple[str, ...] = setting((), "folders, globs, list files, files or URLs", positional=True)
    out_dir: str = setting("data/ingest", "output folder")
    cache_dir: str | None = setting(
        None, "each file's result, kept as soon as it is known (default <out_dir>/cache; a pipeline task: the volume)"
    )
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    max_bytes: int = setting(20 * 2**30, "larger files are quarantined")
    val_fraction: float = setting(0.05, "share of source videos held out (the validation split)")
    split_distance: int | None = setting(
        4, "sources with clips within this many phash bits are one group, held out together (none: same bytes only)"
    )
    split_seed: int = setting(0, "seed of the split")
    clip_mode: str = setting(
        "rows",
        "rows: (source, start, end) rows only; copy: clip files by stream copy from keyframes; "
        "reencode: frame-exact H.264 clip files",
    )
    workers: int = setting(1, "processes")
    aesthetic_model: str | None = setting(None, "CLIP model (id or folder) for the aesthetic score (column aes)")
    aesthetic_head: str | None = setting(None, "MLP head (torch state dict) on CLIP embeddings for the aesthetic score")
    ocr_model: str | None = setting(None, "DB text detector (ONNX) for the text-area score (column ocr)")
    progress: bool = setting(True, "progress bar")
    num_shards: int = setting(
        0,
        "ingest tasks a pipeline run fans the files out over, each file by a hash of its name (0: one per "
        "files_per_shard files); `t2v ingest` alone analyses every file in one process (--workers)",
    )
    files_per_shard: int = setting(500, "files per ingest task when num_shards is 0")
    shard: int | None = setting(
        None,
        "analyse only this shard's files (of num_shards) into <out_dir>/parts/; --merge then writes the manifest",
    )
    merge: bool = setting(False, "the manifest from every shard's part in <out_dir>/parts, analysing nothing")

    def __post_init__(self):
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode={self.clip_mode!r} must be one of {CLIP_MODES}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if self.num_shards < 0 or self.files_per_shard < 1:
            raise ValueError(
                f"num_shards={self.num_shards} must be >= 0 and files_per_shard={self.files_per_shard} >= 1"
            )
        if self.shard is not None and not 0 <= self.shard < max(self.num_shards, 1):
            raise ValueError(f"shard={self.shard} must be in [0, num_shards={self.num_shards})")
        if self.shard is not None and self.merge:
            raise ValueError("shard and merge are two tasks of a fanned-out run: give one")
        if self.split_distance is not None and not 0 <= self.split_distance <= 64:
            raise ValueError(
                f"split_distance={self.split_distance} must be a number of phash bits in [0, 64], or none to group "
                "byte-identical files only"
            )

    @staticmethod
    def recipe_defaults(recipe: dict, overrides: list[str]) -> dict:
        """Under a recipe, the smallest frame kept is the smallest that stage 1 trains on (its bucket_config, with
        the run's overrides: `stage1.precompute.bucket_config=...`)."""

        def values(sections: tuple[str, ...]) -> dict:
            return settings.layered(
                None, recipe=recipe, sections=sections, overrides=settings.scoped(overrides, sections)
            )

        data = settings.merge(values(("precompute",)), settings.stage_data(values(settings.stage_sections(1))))
        return {"filters": {"min_pixels": smallest_area(data.get("bucket_config") or DEFAULT_BUCKETS)}}

    def models(self) -> dict[str, str | None]:
        """The pretrained weights these settings load, by setting (a task checks them at its start)."""
        return {"ingest.aesthetic_model": self.aesthetic_model, "ingest.aesthetic_head": self.aesthetic_head,
                "ingest.ocr_model": self.ocr_model}  # fmt: skip


def inputs_of(source: str, toy: str) -> list[str]:
    """A pipeline run's `source` as ingest inputs: comma-separated folders, globs, list files or URLs, or "synth",
    the toy world the synth task wrote to `toy`."""
    return [toy] if source == "synth" else [s.strip() for s in source.split(",") if s.strip()]
