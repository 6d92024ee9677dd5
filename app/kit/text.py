"""Text shown to other people (file names, titles, names): no invisible reordering, controls
or invisible characters.

A right-to-left override (U+202E) before "gpj.exe" makes it display as "exe.jpg"; other
control characters can hide text or break a terminal or log line; zero-width characters
make two different titles look the same ("Payroll" and "Pay\u200broll"), and Unicode TAG
characters (U+E0000-U+E007F) spell ASCII that nobody sees but some language models read.
Names and titles are cleaned once, where they enter, so every later display of them is safe.
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

# The format characters that are visible: the prepended concatenation marks, which draw a
# sign over the digits after them (Arabic number and year signs, ...).
_VISIBLE_FORMAT = frozenset(
    "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
)
_ZWNJ = "\u200c"
_ZWJ = "\u200d"
# Where emoji live, closely enough to tell an emoji ZWJ sequence (woman + ZWJ + laptop =
# "woman technologist") from a joiner slipped between two Latin letters: the pictographs
# and symbols blocks, skin-tone modifiers (inside the first range), the emoji variation
# selector and the keycap mark.
_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),
    (0x2300, 0x23FF),
    (0x2600, 0x27BF),
    (0x2B00, 0x2BFF),
    (0xFE0F, 0xFE0F),
    (0x20E3, 0x20E3),
)


def clean_display_text(value: str) -> str:
    """`value` without bidi controls, control characters (whitespace ones become a space) and
    invisible format characters (category Cf: zero-width space, word joiner, BOM, soft hyphen,
    TAG characters, ...), trimmed. A zero-width joiner or non-joiner stays only where a script
    or an emoji sequence needs it (see ``_joiner_needed``). May be empty: the caller decides
    whether that is an error or needs a fallback."""
    kept: list[str] = []
    for index, char in enumerate(value):
        if char in BIDI_CONTROLS:
            continue
        category = unicodedata.category(char)
        if category == "Cc":
            # Tabs and line breaks separate words: keep the separation, not the control.
            if char.isspace():
                kept.append(" ")
            continue
        if (
            category == "Cf"
            and char not in _VISIBLE_FORMAT
            and not (char in (_ZWJ, _ZWNJ) and _joiner_needed(char, value, index, kept))
        ):
            continue
        kept.append(char)
    return "".join(kept).strip()


def _joiner_needed(joiner: str, value: str, index: int, kept: list[str]) -> bool:
    """Whether the ZWJ/ZWNJ at ``value[index]`` changes how its neighbours render.

    After a virama (Devanagari, Bengali, ...) both select a conjunct form; between two
    Arabic-script letters ZWNJ breaks the joining (Persian needs it in everyday words);
    between two emoji ZWJ makes one glyph of them. Anywhere else a joiner is invisible and
    only makes one title look like another, so it goes. (A rule in the spirit of IDNA's
    CONTEXTJ, RFC 5892, widened for emoji.)
    """
    previous = kept[-1] if kept else ""
    following = value[index + 1] if index + 1 < len(value) else ""
    if not previous or not following:
        return False
    if unicodedata.combining(previous) == 9:  # virama
        return True
    if joiner == _ZWNJ:
        return unicodedata.bidirectional(previous) in ("AL", "NSM") and (
            unicodedata.bidirectional(following) == "AL"
        )
    return _is_emoji(previous) and _is_emoji(following)


def _is_emoji(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _EMOJI_RANGES)


def display_text_validator(value: str) -> str:
    """For pydantic validators: the cleaned text; ValueError when nothing visible is left."""
    cleaned = clean_display_text(value)
    if not cleaned:
        raise ValueError("must contain visible characters")
    return cleaned


# A pydantic field type for names and titles: cleaned, and refused (422) when empty after it.
DisplayText = Annotated[str, AfterValidator(display_text_validator)]
