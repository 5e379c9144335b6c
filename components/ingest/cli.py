"""`t2v ingest`: the command line of the ingest step."""

from __future__ import annotations

import argparse
from dataclasses import fields

from components.ingest.ingest import CLIP_MODES, FilterConfig, IngestConfig, ingest, with_overrides
from components.ingest.media import AnalysisConfig

EXIT_QUARANTINED = 3

DESCRIPTION = """\
Turn videos and images into a filtered clip manifest with a held-out split.

Inputs are folders (searched recursively), globs, list files (.txt/.lst/.list, one path or URL per line),
single files, or fsspec URLs (s3://, gs://, http(s)://; credentials from the usual environment). Each file is
probed and decoded once: scene cuts (PySceneDetect), clips of --min-seconds to --max-seconds, and per clip
motion (optical flow), sharpness, brightness and a perceptual hash for near-duplicates.

Outputs in --out-dir: manifest.parquet and manifest.csv (Open-Sora columns path,text,num_frames,height,width,
aspect_ratio,fps,resolution, then clip_id, source, start/end, scores, split), rejected_clips.parquet (clips
filtered out, with the reason), quarantine.parquet (files that cannot be used, with the reason), summary.json,
and cache/ (per-file results: a re-run skips files already analyzed).
"""

EPILOG = """\
exit status: 0 every input came through; 3 finished, but some files were quarantined (see summary.json and
quarantine.parquet; everything else was written); 2 bad arguments.
"""

HELP = {
    "min_seconds": "shortest clip; shorter scenes are dropped",
    "max_seconds": "longest clip; longer scenes are cut into consecutive clips",
    "detector": "scene detector: content (fast) or adaptive",
    "scene_threshold": "scene detector threshold (content: 27, adaptive: 3)",
    "min_scene_frames": "shortest scene the detector reports, in frames",
    "score_interval": "seconds between frames kept for scoring",
    "max_score_pairs": "frame pairs per clip for the motion score",
    "max_pixels": "larger frames are quarantined",
    "max_duration": "longer files are quarantined (seconds)",
    "min_decoded_share": "a file that decodes fewer of the frames its header promises is truncated",
    "min_fps": "a lower frame rate (from decoded timestamps) marks broken timing",
    "min_motion": "drop clips with less motion (pixels/frame at <=320 px)",
    "max_motion": "drop clips with more motion",
    "min_sharpness": "drop clips less sharp (variance of the Laplacian)",
    "min_brightness": "drop darker clips (mean in [0, 1])",
    "max_brightness": "drop brighter clips",
    "dedup_distance": "drop a clip within this many phash bits of an earlier one (-1: off)",
    "min_aesthetic": "drop clips scoring lower (needs --aesthetic-model/--aesthetic-head)",
    "max_text_area": "drop clips with more of the frame covered by text (needs --ocr-model)",
}


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "off", "") else kind(text)

    return parse


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "ingest",
        help="videos and images -> filtered clip manifest with a held-out split",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = IngestConfig()
    p.add_argument("inputs", nargs="+", help="folders, globs, list files, files or URLs")
    p.add_argument("--out-dir", default=d.out_dir, help=f"(default {d.out_dir})")
    p.add_argument(
        "--clip-mode",
        choices=CLIP_MODES,
        default=d.clip_mode,
        help="rows: (source, start, end) rows "
        "only (default); copy: clip files by stream copy from keyframes; reencode: frame-exact H.264",
    )
    p.add_argument("--workers", type=int, default=d.workers, help="processes (default 1)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of sources held out (0.05)")
    p.add_argument("--split-seed", type=int, default=d.split_seed, help="seed of the split (default 0)")
    p.add_argument("--max-bytes", type=int, default=d.max_bytes, help="larger files are quarantined")
    p.add_argument("--aesthetic-model", help="CLIP model folder for the aesthetic score (column aes; off by default)")
    p.add_argument("--aesthetic-head", help="MLP head (torch state dict) on CLIP embeddings for the aesthetic score")
    p.add_argument("--ocr-model", help="DB text detector (ONNX) for the text-area score (column ocr; off by default)")
    for group, defaults in (("analysis", AnalysisConfig()), ("filters", FilterConfig())):
        g = p.add_argument_group(group)
        for f in fields(defaults):
            default = getattr(defaults, f.name)
            kind = _optional(float if f.type.startswith("float") else int if f.type.startswith("int") else str)
            g.add_argument(
                f"--{f.name.replace('_', '-')}", type=kind, default=default, help=f"{HELP[f.name]} (default {default})"
            )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k not in ("run", "verbose", "no_progress")}
    values["inputs"] = tuple(values["inputs"])
    cfg = with_overrides(IngestConfig(progress=not args.no_progress), **values)
    result = ingest(cfg)
    q = sum(result.quarantined.values())
    print(
        f"{result.sources} files: {result.sources - q} ok, {q} quarantined {result.quarantined or ''}; "
        f"{result.ignored} other files ignored\n"
        f"{result.clips} clips kept ({result.summary['clips_train']} train, {result.summary['clips_val']} val), "
        f"{result.rejected_clips} rejected {result.summary['rejected_clips'] or ''}\n"
        f"manifest: {result.out_dir / 'manifest.parquet'}"
    )
    return EXIT_QUARANTINED if q else 0
