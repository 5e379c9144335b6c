"""Which clips ingest keeps: thresholds on their scores and frame size (`FilterConfig`, `filter_reason`), and the one
fate each file meets (`file_fates`): kept, filtered or quarantined, with the reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pandas as pd

from components.common.settings import setting
from model.planning.buckets import DEFAULT_BUCKETS, smallest_area

FATES = ("kept", "filtered", "quarantined")  # every file has one (files.parquet; the summary counts their reasons)


@dataclass(frozen=True)
class FilterConfig:
    """Clip thresholds; none switches a filter off."""

    min_motion: float | None = setting(None, "drop clips with less motion (pixels/frame at <=320 px)")
    max_motion: float | None = setting(None, "drop clips with more motion")
    min_sharpness: float | None = setting(None, "drop clips less sharp (variance of the Laplacian)")
    min_brightness: float | None = setting(0.02, "drop darker clips (mean in [0, 1])")
    max_brightness: float | None = setting(0.98, "drop brighter clips")
    dedup_distance: int | None = setting(4, "drop a clip within this many phash bits of an earlier one (none: off)")
    min_aesthetic: float | None = setting(None, "drop clips scoring lower (needs aesthetic_model and aesthetic_head)")
    max_text_area: float | None = setting(None, "drop clips with more of the frame covered by text (needs ocr_model)")
    min_pixels: int | None = setting(
        None,
        "drop clips whose frames hold fewer pixels (width x height): they could only be upscaled. Under a recipe "
        "(--recipe, the pipeline, DVC) the default is the area of the smallest bucket stage 1 trains on (its "
        f"precompute bucket_config, else precompute's default: {smallest_area(DEFAULT_BUCKETS)}); none: no minimum",
    )


def filter_reason(row: dict, f: FilterConfig) -> str | None:
    checks = [
        (f.min_motion, lambda v: row["motion"] < v, "motion {m:.3g} < min_motion {v}"),
        (f.max_motion, lambda v: row["motion"] > v, "motion {m:.3g} > max_motion {v}"),
        (f.min_sharpness, lambda v: row["sharpness"] < v, "sharpness {s:.3g} < min_sharpness {v}"),
        (f.min_brightness, lambda v: row["brightness"] < v, "brightness {b:.3g} < min_brightness {v}"),
        (f.max_brightness, lambda v: row["brightness"] > v, "brightness {b:.3g} > max_brightness {v}"),
        (f.min_aesthetic, lambda v: row["aes"] < v, "aesthetic {a:.3g} < min_aesthetic {v}"),
        (f.max_text_area, lambda v: row["ocr"] > v, "text area {o:.3g} > max_text_area {v}"),
        (f.min_pixels, lambda v: row["width"] * row["height"] < v,
         "frames {w} x {h} below the minimum of {v} pixels (filters.min_pixels: stage 1's smallest bucket)"),
    ]  # fmt: skip
    for value, failed, message in checks:
        if value is not None and failed(value):
            scores = {"m": row["motion"], "s": row["sharpness"], "b": row["brightness"], "w": row["width"]}
            return message.format(**scores, h=row["height"], a=row.get("aes", 0), o=row.get("ocr", 0), v=value)
    return None


def file_fates(results: list[dict], kept: list[dict], rejected: list[dict]) -> pd.DataFrame:
    """Each file's one fate: kept (a clip of it in the manifest), filtered (every clip of it rejected: the reason of
    most of them) or quarantined (unusable: why); `code` is the reason's first word, which the summary counts."""
    clips = Counter(row["source"] for row in kept)
    reasons: dict[str, Counter] = {}
    for row in rejected:
        reasons.setdefault(row["source"], Counter())[row["reason"]] += 1
    rows = []
    for r in results:
        if r["status"] != "ok":
            fate, reason = "quarantined", f"{r['reason']}: {r['detail']}"
        elif clips[r["source"]]:
            note = r["info"].get("note")
            fate, reason = "kept", f"{clips[r['source']]} clips" + (f"; {note}" if note else "")
        else:
            found = reasons.get(r["source"])
            fate, reason = "filtered", found.most_common(1)[0][0] if found else "no clip in it"
        code = "kept" if fate == "kept" else reason.split(":" if fate == "quarantined" else " ")[0]
        rows.append({"source": r["source"], "hash": r.get("hash"), "fate": fate, "code": code, "reason": reason})
    return pd.DataFrame(rows, columns=["source", "hash", "fate", "code", "reason"])
