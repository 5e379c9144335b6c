"""Caption text clean-up and score suffixes: pure functions of strings."""

from __future__ import annotations

import math
import re

# Openings that describe the medium instead of the content ("The video shows ...").
_OPENING = re.compile(
    r"^\s*(?:(?:in|within)\s+(?:this|the)\s+(?:video|clip|image|footage|scene)\s*,?\s*"
    r"|(?:the|this)\s+(?:video|clip|image|footage|scene|animation)(?:\s+clip)?\s+"
    r"(?:shows|depicts|features|displays|captures|presents|showcases|illustrates|is\s+showing|begins\s+with)\s+)",
    re.IGNORECASE,
)
SCORE_NAMES = {"aes": "aesthetic score", "motion": "motion score", "ocr": "text area"}


def clean_caption(text: str) -> str:
    """Drop boilerplate openings and model artefacts, collapse whitespace, capitalise the first letter."""
    text = re.sub(r"\s+", " ", text.replace("</s>", " ")).strip()
    while (match := _OPENING.match(text)) and match.end() < len(text):
        text = text[match.end() :]
    return text[:1].upper() + text[1:] if text else text


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
