"""clean_display_text: what is removed from names and titles, and what is kept."""

from __future__ import annotations

import pytest

from app.chat.answers import _title
from app.kit.text import clean_display_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\u202egpj.exe", "gpj.exe"),
        ("a\u202ab\u202bc\u202cd\u202de", "abcde"),
        ("\u2066x\u2067y\u2068z\u2069", "xyz"),
        ("\u200eleft\u200fright\u061c", "leftright"),
        ("tab\there\nline\r\x00\x07\x1b\x7f\x85", "tab here line"),
        # Ordinary text is kept: spaces, CJK, Arabic, emoji sequences with a joiner.
        ("  请假制度 ", "请假制度"),
        ("مرحبا بالعالم", "مرحبا بالعالم"),
        ("\U0001f469\u200d\U0001f4bb notes", "\U0001f469\u200d\U0001f4bb notes"),
        ("\u202e", ""),
    ],
)
def test_clean_display_text(raw: str, clean: str) -> None:
    assert clean_display_text(raw) == clean


def test_chat_titles_are_cleaned() -> None:
    assert _title("\u202egpj.exe\u2069 what is\tthis?") == "gpj.exe what is this?"
    assert _title("\u202e\u200f") == "Chat"
