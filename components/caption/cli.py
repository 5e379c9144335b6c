"""`t2v caption`: the command line of the caption step."""

from __future__ import annotations

import argparse

from components.caption.caption import CaptionConfig, caption
from components.common.cli import add_verb

DESCRIPTION = """\
Give every clip of an ingest manifest a caption.

Captioners: `vlm` (default) runs a transformers vision-language model given by hub id or local path:
LLaVA-1.6 / LLaVA-NeXT (the clip's frames as images) or LLaVA-NeXT-Video (the frames as a video), greedy and
batched, bf16 on GPU. `metadata` takes captions that came with the data: sidecar files beside each source
(<name>.txt, or <name>.json with "caption"/"text") or a manifest column (--from-column).

Captions are cleaned of boilerplate openings ("The video shows ..."); --append-scores adds score suffixes as
Open-Sora 1.2 does ("... aesthetic score: 5.5, motion score: 3.2.").

Resumable: results go to parts/shard-III-of-NNN.jsonl as they are made; a re-run skips captioned clips.
Shardable: --shard I --num-shards N captions every N-th clip; when all shards are done (in any run), the
outputs are written to --out-dir: manifest.parquet (the input with `text` filled), captions.parquet
(clip_id, text, raw, captioner) and summary.json (caption lengths, empties).
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    add_verb(verbs, "caption", CaptionConfig, _run, description=DESCRIPTION)


def _run(cfg: CaptionConfig) -> int:
    result = caption(cfg)
    print(f"shard {cfg.shard}/{cfg.num_shards}: {result.captioned} captioned, {result.skipped} already done")
    if result.complete:
        s = result.summary
        print(
            f"{s['clips']} captions, {s['empty']} empty, words mean {s['words_mean']:.1f} "
            f"(min {s['words_min']}, max {s['words_max']}) -> {result.out_dir / 'manifest.parquet'}"
        )
    else:
        print("other shards are not done yet: outputs are written when the last shard finishes")
    return 0
