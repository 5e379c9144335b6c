"""`t2v precompute`: the command line of the precompute step."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from components.precompute.precompute import PrecomputeConfig, precompute

DESCRIPTION = """\
Encode a captioned manifest once: every clip is put in a bucket (resolution x frames x aspect ratio, Open-Sora's
bucket_config form), its frames are sampled at --frame-interval (or --target-fps), centred in the clip and
resize-cropped to the bucket, then encoded by the VAE; its caption by the T5 text encoder. The results go to
<out-root>/<key>/ (sharded safetensors, index.parquet, meta.json), where <key> hashes the manifest's content,
the encoders, the buckets and the sampling: an unchanged re-run reuses it.

--vae: a diffusers AutoencoderKL / AutoencoderKLCogVideoX (hub id, model folder or pipeline folder), or
"none[:F]" for pixel space through an exact space-to-depth autoencoder (the toy world).
--text-encoder: a T5 encoder with its tokenizer (hub id, model folder or pipeline folder).
--buckets: JSON or YAML (inline, or a file), e.g. '{"256": {"1": [1.0, 32], "16": [1.0, 4]}}'.
"""


def parse_buckets(text: str) -> dict:
    source = Path(text).read_text() if Path(text).is_file() else text
    try:
        value = yaml.safe_load(source)
    except yaml.YAMLError as err:
        raise ValueError(f"--buckets {text!r}: not JSON/YAML ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"--buckets {text!r}: expected a mapping resolution -> frames -> [probability, batch]")
    return {str(r): {int(t): tuple(v) if isinstance(v, list) else v for t, v in f.items()} for r, f in value.items()}


def add_parser(verbs: argparse._SubParsersAction) -> None:
    d = PrecomputeConfig()
    p = verbs.add_parser(
        "precompute",
        help="VAE latents and text embeddings, once, into a keyed cache",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--manifest", default=d.manifest, help=f"captioned manifest (default {d.manifest})")
    p.add_argument("--out-root", default=d.out_root, help=f"(default {d.out_root})")
    p.add_argument("--vae", default=d.vae, help=f"(default {d.vae})")
    p.add_argument("--text-encoder", default=d.text_encoder, help=f"(default {d.text_encoder})")
    p.add_argument("--max-text-tokens", type=int, default=d.max_text_tokens, help=f"(default {d.max_text_tokens})")
    p.add_argument(
        "--buckets", type=parse_buckets, default=d.bucket_config, help=f"(default {json.dumps(d.bucket_config)})"
    )
    p.add_argument("--frame-interval", type=int, default=d.frame_interval, help="take every k-th frame (default 1)")
    p.add_argument("--target-fps", type=float, help="sample frames at this rate instead of --frame-interval")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the bucket draws (default 0)")
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"clips per encoder call (default {d.batch_size})"
    )
    p.add_argument("--storage-dtype", default=d.storage_dtype, choices=("float32", "bfloat16", "float16"))
    p.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = PrecomputeConfig(
        manifest=args.manifest,
        out_root=args.out_root,
        vae=args.vae,
        text_encoder=args.text_encoder,
        max_text_tokens=args.max_text_tokens,
        bucket_config=args.buckets,
        frame_interval=args.frame_interval,
        target_fps=args.target_fps,
        seed=args.seed,
        batch_size=args.batch_size,
        storage_dtype=args.storage_dtype,
        device=args.device,
        progress=not args.no_progress,
    )
    result = precompute(cfg)
    verb = "reused" if result.reused else "wrote"
    buckets = result.index.groupby("bucket").size().to_dict()
    print(f"{verb} {result.samples} samples ({result.skipped} clips fit no bucket) in {result.out_dir}: {buckets}")
    return 0
