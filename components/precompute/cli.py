"""`t2v precompute`: the command line of the precompute step."""

from __future__ import annotations

import argparse

from components.common.cli import add_verb
from components.precompute.config import PrecomputeConfig

DESCRIPTION = """\
Encode a captioned manifest once: every clip is put in a bucket (resolution x frames x aspect ratio, Open-Sora's
bucket_config form), its frames are sampled at --frame-interval (or --target-fps), centred in the clip and
resize-cropped to the bucket, then encoded by the VAE; its caption by the T5 text encoder. The results go to
<out-root>/<key>/ (sharded safetensors, index.parquet, meta.json), where <key> hashes the manifest's content,
the encoders, the buckets and the sampling: an unchanged re-run reuses it.

--bucket-config: JSON or YAML (inline, or a file), e.g. '{"256": {"1": [1.0, 32], "16": [1.0, 4]}}'.

The files are encoded as a pipeline run spreads them over --num-shards tasks (file j by task j mod n, one GPU each),
here one task after the other, each file written as soon as it is done: an interrupted run goes on from the files
it wrote. The folder holds the same tensors and index whatever the number of tasks.
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    add_verb(verbs, "precompute", PrecomputeConfig, _run, description=DESCRIPTION)


def _run(cfg: PrecomputeConfig) -> int:
    from components.precompute.precompute import precompute  # the step's libraries load when it runs, not for --help

    result = precompute(cfg)
    verb = "reused" if result.reused else "wrote"
    buckets = result.index.groupby("bucket").size().to_dict()
    print(f"{verb} {result.samples} samples ({result.skipped} clips fit no bucket) in {result.out_dir}: {buckets}")
    return 0
