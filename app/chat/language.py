"""Which language to answer in, and the fixed sentences Cairn says itself in each."""

from __future__ import annotations

import re
from typing import Literal

from app.search.index.tokenize import ENGLISH_STOP_WORDS

Language = Literal["zh", "en", "other"]

_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile("[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"[a-z']+")


def detect_language(text: str) -> Language:
    """Chinese when Han characters make up a third of the letters; English when Latin letters
    dominate and an English function word appears; otherwise "other" (the model is then told
    to answer in the question's own language)."""
    letters = len(_LETTER.findall(text))
    if letters == 0:
        return "en"
    han = len(_HAN.findall(text))
    # A Chinese question with an English product name in it is still Chinese; Han characters
    # carry a word each where Latin letters carry a fraction of one.
    if han * 3 >= letters:
        return "zh"
    if len(_LATIN.findall(text)) * 2 >= letters:
        words = set(_WORD.findall(text.lower()))
        if words & ENGLISH_STOP_WORDS:
            return "en"
    return "other"


ANSWER_IN: dict[Language, str] = {
    "zh": "Answer in Simplified Chinese. 请用简体中文回答。",
    "en": "Answer in English.",
    "other": "Answer in the language the question is written in.",
}

NOTHING_FOUND: dict[Language, str] = {
    "zh": "在您可以访问的文档中，没有找到与这个问题相关的内容，因此无法回答。",
    "en": (
        "I could not find anything about this in the documents available to you, "
        "so I cannot answer it."
    ),
    "other": (
        "I could not find anything about this in the documents available to you, "
        "so I cannot answer it."
    ),
}

# What Cairn says when the model answered that the documents do not answer: a fixed sentence,
# never the model's own words, which would pass unchecked (a refusal-shaped answer can carry
# anything after its first clause: an earlier turn's secret, an injected link).
REFUSED: dict[Language, str] = {
    "zh": "在您可以访问的文档中没有找到这个问题的答案。",
    "en": "The documents available to you do not answer this question.",
    "other": "The documents available to you do not answer this question.",
}

SOURCES_HEADING: dict[Language, str] = {"zh": "来源", "en": "Sources", "other": "Sources"}


def refused(language: Language) -> str:
    """Cairn's own sentence for an answer the model declined to give."""
    return REFUSED[language]


def nothing_found(language: Language) -> str:
    """What Cairn answers when no visible passage is relevant, instead of inventing."""
    return NOTHING_FOUND[language]
