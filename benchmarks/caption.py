"""Caption throughput with a tiny LLaVA-NeXT: clips per second, and where the time goes (decoding the clips'
frames vs generating the captions), per batch size.

The tiny model (2-layer CLIP tower and Llama) makes generation unrealistically cheap, so the decode share here
is an upper bound: with a 7B model on a GPU, generation dominates. The figures that carry over are the batching
speed-up and the per-clip decode cost.

    python benchmarks/caption.py            # 40 videos, batch sizes 1, 4, 16
    python benchmarks/caption.py --quick    # 8 videos, batch sizes 1, 4 (CI)

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from components.caption.caption import CaptionConfig, caption
from components.common import settings
from components.common.toy.tiny import build_tiny_llava_next
from components.ingest.config import IngestConfig
from components.ingest.ingest import ingest
from components.synth.synth import SynthConfig, synth


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 videos, batch sizes 1 and 4 (for CI)")
    parser.add_argument("--frames", type=int, default=3, help="frames per clip (default 3)")
    args = parser.parse_args(argv)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    videos, batch_sizes = (8, [1, 4]) if args.quick else (40, [1, 4, 16])
    work = Path(tempfile.mkdtemp(prefix="t2v-bench-caption-"))
    try:
        toy = synth(SynthConfig(out_dir=str(work / "toy"), videos=videos, images=0, size=128))
        cfg = settings.updated(
            IngestConfig(inputs=(str(toy),), out_dir=str(work / "ingest"), progress=False),
            {"filters.dedup_distance": None},
        )
        ingest(cfg)
        model = build_tiny_llava_next(work / "model")
        rows = []
        for batch in batch_sizes:
            out = work / f"captions-{batch}"
            start = time.perf_counter()
            result = caption(
                CaptionConfig(
                    manifest=str(work / "ingest" / "manifest.parquet"),
                    out_dir=str(out),
                    model=str(model),
                    frames=args.frames,
                    batch_size=batch,
                    max_new_tokens=24,
                    min_new_tokens=24,
                    progress=False,
                )
            )
            total = time.perf_counter() - start
            t = result.timings
            work_s = t["decode_s"] + t["caption_s"]
            rows.append(
                {
                    "batch_size": batch,
                    "clips": result.captioned,
                    "seconds": total,
                    "clips_per_s": result.captioned / work_s,
                    "decode_share": t["decode_s"] / work_s,
                    "generate_share": t["caption_s"] / work_s,
                    "decode_ms_per_clip": 1e3 * t["decode_s"] / result.captioned,
                    "generate_ms_per_clip": 1e3 * t["caption_s"] / result.captioned,
                }
            )
        print(f"tiny LLaVA-NeXT, {args.frames} frames per clip, 24 new tokens, {rows[0]['clips']} clips of 128x128")
        print(f"{'batch':>5} {'clips/s':>8} {'decode':>7} {'generate':>9} {'decode ms/clip':>15} {'gen ms/clip':>12}")
        for r in rows:
            print(
                f"{r['batch_size']:5d} {r['clips_per_s']:8.2f} {r['decode_share']:7.0%} {r['generate_share']:9.0%} "
                f"{r['decode_ms_per_clip']:15.1f} {r['generate_ms_per_clip']:12.1f}"
            )
        result = {
            "benchmark": "caption",
            "quick": args.quick,
            "frames_per_clip": args.frames,
            "rows": rows,
            "batching_speedup": rows[-1]["clips_per_s"] / rows[0]["clips_per_s"],
        }
        print(json.dumps(result))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
