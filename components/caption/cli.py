"""`t2v caption`: the command line of the caption step."""

from __future__ import annotations

import argparse

from components.caption.caption import CAPTIONERS, CaptionConfig, caption
from components.caption.captioners import DEFAULT_FRAMES, FAMILIES

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
    d = CaptionConfig()
    p = verbs.add_parser(
        "caption",
        help="a caption per clip: vision-language model or metadata",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--manifest", default=d.manifest, help=f"ingest manifest (default {d.manifest})")
    p.add_argument("--out-dir", default=d.out_dir, help=f"(default {d.out_dir})")
    p.add_argument("--captioner", choices=CAPTIONERS, default=d.captioner, help="(default vlm)")
    p.add_argument("--model", default=d.model, help=f"hub id or local folder (default {d.model})")
    p.add_argument("--family", choices=FAMILIES, help="model family; read from the model's config by default")
    p.add_argument("--prompt", default=d.prompt, help="instruction given with the frames")
    p.add_argument("--frames", type=int, help=f"frames per clip (default per family: {DEFAULT_FRAMES})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    p.add_argument("--min-new-tokens", type=int, default=d.min_new_tokens, help=f"(default {d.min_new_tokens})")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help=f"(default {d.max_new_tokens})")
    p.add_argument("--dtype", default=d.dtype, help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model (off)")
    p.add_argument("--from-column", help="metadata captioner: take captions from this manifest column")
    p.add_argument("--append-scores", nargs="*", default=[], metavar="COLUMN", help="e.g. aes motion")
    p.add_argument("--shard", type=int, default=0, help="this run's shard, 0-based (default 0)")
    p.add_argument("--num-shards", type=int, default=1, help="number of shards (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = CaptionConfig(
        manifest=args.manifest,
        out_dir=args.out_dir,
        captioner=args.captioner,
        model=args.model,
        family=args.family,
        prompt=args.prompt,
        frames=args.frames,
        batch_size=args.batch_size,
        min_new_tokens=args.min_new_tokens,
        max_new_tokens=args.max_new_tokens,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        from_column=args.from_column,
        append_scores=tuple(args.append_scores),
        shard=args.shard,
        num_shards=args.num_shards,
        progress=not args.no_progress,
    )
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
