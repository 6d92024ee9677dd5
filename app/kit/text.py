"""Text shown to other people (file names, titles, names): no invisible reordering or controls.

A right-to-left override (U+202E) before "gpj.exe" makes it display as "exe.jpg"; other
control characters can hide text or break a terminal or log line. Names and titles are
cleaned once, where they enter, so every later display of them is safe.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator

# Unicode's bidirectional formatting characters: embeddings and overrides (U+202A-U+202E),
# isolates (U+2066-U+2069) and the implicit marks LRM, RLM and ALM.
BIDI_CONTROLS = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c"]
)


def clean_display_text(value: str) -> str:
    """`value` without bidi controls and control characters (whitespace ones become a space),
    trimmed. May be empty: the caller decides whether that is an error or needs a fallback."""
    kept: list[str] = []
    for char in value:
        if char in BIDI_CONTROLS:
            continue
        if unicodedata.category(char) == "Cc":
            # Tabs and line breaks separate words: keep the separation, not the control.
            if char.isspace():
                kept.append(" ")
            continue
        kept.append(char)
    return "".join(kept).strip()


def display_text_validator(value: str) -> str:
    """For pydantic validators: the cleaned text; ValueError when nothing visible is left."""
    cleaned = clean_display_text(value)
    if not cleaned:
        raise ValueError("must contain visible characters")
    return cleaned


# A pydantic field type for names and titles: cleaned, and refused (422) when empty after it.
DisplayText = Annotated[str, AfterValidator(display_text_validator)]
