"""Caption score suffixes (Open-Sora 1.2's score conditioning); the clean-up itself is model.inference.prompts."""

from __future__ import annotations

import math

SCORE_NAMES = {"aes": "aesthetic score", "motion": "motion score", "ocr": "text area"}


def append_scores(text: str, scores: dict[str, float]) -> str:
    """Open-Sora 1.2's score conditioning: "<caption> aesthetic score: 5.5, motion score: 10.0." (missing scores
    are left out)."""
    parts = [
        f"{SCORE_NAMES.get(k, k)}: {v:.1f}" for k, v in scores.items() if v is not None and not math.isnan(float(v))
    ]
    if not parts:
        return text
    body = text.rstrip()
    sep = "" if not body else (" " if body.endswith((".", "!", "?")) else ". ")
    return f"{body}{sep}{', '.join(parts)}."
