"""Caption and prompt clean-up, one function for training captions and typed prompts alike."""

from __future__ import annotations

import re

# Openings that describe the medium instead of the content ("The video shows ...").
_OPENING = re.compile(
    r"^\s*(?:(?:in|within)\s+(?:this|the)\s+(?:video|clip|image|footage|scene)\s*,?\s*"
    r"|(?:the|this)\s+(?:video|clip|image|footage|scene|animation)(?:\s+clip)?\s+"
    r"(?:shows|depicts|features|displays|captures|presents|showcases|illustrates|is\s+showing|begins\s+with)\s+)",
    re.IGNORECASE,
)


def clean_caption(text: str) -> str:
    """Drop boilerplate openings and model artefacts, collapse whitespace, capitalise the first letter."""
    text = re.sub(r"\s+", " ", text.replace("</s>", " ")).strip()
    while (match := _OPENING.match(text)) and match.end() < len(text):
        text = text[match.end() :]
    return text[:1].upper() + text[1:] if text else text
