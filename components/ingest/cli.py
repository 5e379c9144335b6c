"""`t2v ingest`: the command line of the ingest step."""

from __future__ import annotations

import argparse

from components.common.cli import add_verb
from components.ingest.config import IngestConfig

EXIT_QUARANTINED = 3

DESCRIPTION = """\
Turn videos and images into a filtered clip manifest with a held-out split.

Inputs are folders (searched recursively), globs, list files (.txt/.lst/.list, one path or URL per line),
single files, or fsspec URLs (s3://, gs://, http(s)://; credentials from the usual environment). Each file is
probed and decoded once: scene cuts (PySceneDetect), clips of --min-seconds to --max-seconds, and per clip
motion (optical flow), sharpness, brightness and a perceptual hash for near-duplicates. Timing is the decoded
frames' (display order; the header's rate only when they are unusable). The held-out split takes whole groups of
sources: those sharing a clip within --split-distance hash bits (a file and its re-encode). Settings: flags below,
or --recipe FILE (its `ingest` section), --config FILE, --set key=value (e.g. --set filters.dedup_distance=none).

Outputs in --out-dir: manifest.parquet and manifest.csv (Open-Sora columns path,text,num_frames,height,width,
aspect_ratio,fps,resolution, then clip_id, source, start/end, seek_time, timing, vfr, rotation, scores, note,
split), rejected_clips.parquet (clips filtered out, with the reason), quarantine.parquet (files that cannot be used,
with the reason), files.parquet (every file's one fate: kept, filtered or quarantined, and why), summary.json (each
fate's reasons counted), and cache/ (per-file results: a re-run skips files already analyzed).

Clips whose frames are smaller than stage 1's smallest bucket are filtered (--filters.min-pixels; under a
recipe its default). A file that decodes under half the frames both its header counts and its timestamps imply
has lost frames: quarantined, or kept with the reason in the `note` column (--analysis.keep-partial).

Fanned out (what a pipeline run does, one task per shard): --shard K analyses the files whose name hashes to shard K
of --num-shards (0: one shard per --files-per-shard files) into <out-dir>/parts/; --merge then writes the manifest
from every part. The manifest is the same as one process's.
"""

EPILOG = """\
exit status: 0 every input came through; 3 finished, but some files were quarantined (see summary.json and
quarantine.parquet; everything else was written); 2 bad arguments.
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    add_verb(verbs, "ingest", IngestConfig, _run, description=DESCRIPTION, epilog=EPILOG)


def _run(cfg: IngestConfig) -> int:
    from components.ingest.ingest import ingest, ingest_shard  # the step's libraries load when it runs

    if cfg.shard is not None:
        part, files = ingest_shard(cfg)
        print(f"shard {cfg.shard}: {files} files analysed into {part}")
        return 0
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
