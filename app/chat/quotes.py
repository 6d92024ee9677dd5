"""Words and sentences of answers and passages: the overlap the faithfulness check and the
supporting quotes are measured with.

Chinese is segmented with jieba's precise mode (not the search tokenizer's overlapping words:
here a word must be found as written); every other run of letters is lower-cased and
Snowball-stemmed, so "vacations" in an answer is found as "vacation" in a passage. Text is
NFKC-normalised first (full-width digits and letters become ASCII).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from app.search.index.tokenize import (
    CHINESE_STOP_WORDS,
    ENGLISH_STOP_WORDS,
    load_segmenter,
    stem_english,
)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RUN = re.compile(f"[{_CJK}]+")
_RUN = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")
# A sentence ends after these; a Latin full stop only before white space (not in "3.5").
_SENTENCE = re.compile(r"(?<=[。！？；!?;])|(?<=\.)\s+|\n+")
# Quote marks and brackets that a sentence may close with after its stop.
_CLOSERS = "」』”’）)】\"'"


def normalise(text: str) -> str:
    """NFKC and lower case: the form texts are compared in."""
    return unicodedata.normalize("NFKC", text).lower()


def _segment(run: str) -> list[str]:
    import jieba

    load_segmenter()
    return [w for w in jieba.lcut(run, HMM=True) if w.strip()]


def words(text: str) -> list[str]:
    """The text's words in order: jieba words for Chinese, stems for everything else; stop
    words dropped."""
    found: list[str] = []
    for match in _RUN.finditer(normalise(text)):
        han, other = match.groups()
        if han:
            found.extend(w for w in _segment(han) if w not in CHINESE_STOP_WORDS)
        elif other and other not in ENGLISH_STOP_WORDS:
            found.extend(stem_english([other]))
    return found


def sentences(text: str) -> list[str]:
    """The text cut into sentences (Chinese and Latin stops, line breaks), stripped."""
    pieces = [p.strip() for p in _SENTENCE.split(text) if p and p.strip()]
    # A closing quote after the stop belongs to the sentence before it.
    merged: list[str] = []
    for piece in pieces:
        if merged and piece[0] in _CLOSERS and len(piece) <= 2:
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def contains(haystack_norm: str, haystack_words: set[str], term: str) -> bool:
    """Whether a word is in a text: as written for Chinese, as a stem for other words."""
    if _HAN_RUN.fullmatch(term):
        return term in haystack_norm
    return term in haystack_words


def best_sentences(
    text: str,
    wanted: Iterable[str],
    *,
    count: int = 1,
    also: Iterable[str] = (),
    subject: Iterable[str] = (),
) -> list[int]:
    """Indexes (in text order) of the `count` sentences of `text` holding most of the `wanted`
    words, ties broken by the `also` words, then by position; [] when none holds any.

    Wanted words that are `subject` words (the passage's title and headings) count as half a
    word, all of them together: every sentence of the passage is about its subject, and the
    one that names it (often the first, defining one) is not for that reason the one about
    what is asked of it. Measured on the 807 CMRC 2018 trial questions outside both tuning
    samples (scripts/sentence_choice.py), the gold paragraph's best sentence holds the gold
    span 0.78 of the time against 0.66 when subject words count in full (BENCHMARKS.md,
    eval-answers)."""
    wanted_set, also_set, subject_set = set(wanted), set(also), set(subject)
    scored: list[tuple[float, float, int]] = []
    for i, sentence in enumerate(sentences(text)):
        own = set(words(sentence))
        hits = own & wanted_set
        score = len(hits - subject_set) + 0.5 * min(1, len(hits & subject_set))
        scored.append((score, len(own & also_set), -i))
    scored.sort(reverse=True)
    picked = [-i for hits, extra, i in scored[:count] if hits > 0 or extra > 0]
    return sorted(picked)


def evidence(text: str, question: str, *, count: int, subject: str = "") -> str:
    """The part of a passage an answer to the question must come from: its `count` sentences
    closest to the question, each with the sentence after it (answers often follow the
    sentence that restates the question). The whole text when `count` is 0; nothing when no
    sentence shares a word with the question (a passage about something else supports no
    answer to it, however faithfully the answer copies it)."""
    if count <= 0:
        return text
    parts = sentences(text)
    picked = best_sentences(text, words(question), count=count, subject=words(subject))
    if not picked:
        return ""
    keep = sorted({j for i in picked for j in (i, i + 1) if j < len(parts)})
    return "\n".join(parts[j] for j in keep)


def supporting_quote(
    answer: str, passage: str, *, question: str = "", max_chars: int = 300, subject: str = ""
) -> str:
    """The sentence(s) of the passage that support the answer: those sharing most of the
    answer's words (the question's words break ties; when the answer shares none, the
    question's words choose; the `subject`'s words count half, see `best_sentences`). Empty
    when nothing of the passage matches either."""
    index = supporting_index(answer, passage, question=question, subject=subject)
    return "" if index is None else _cut(sentences(passage)[index], max_chars)


def supporting_index(
    answer: str, passage: str, *, question: str = "", subject: str = ""
) -> int | None:
    """Which sentence of the passage `supporting_quote` quotes; None when none matches."""
    picked = best_sentences(passage, words(answer), also=words(question), subject=words(subject))
    return picked[0] if picked else None


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def sentence_window(text: str, question: str, *, count: int) -> str:
    """The `count` sentences of a passage around the one closest to the question (it and
    the ones after it, then before): what a small model reads instead of the whole chunk.
    The whole text when it has no more sentences than that or none matches."""
    parts = sentences(text)
    if count <= 0 or len(parts) <= count:
        return text
    picked = best_sentences(text, words(question))
    if not picked:
        return " ".join(parts[:count]) if not _HAN_RUN.search(text) else "".join(parts[:count])
    centre = picked[0]
    # One sentence of lead-in before the hit (it often names the subject), the rest after.
    lead = 1 if count > 1 else 0
    start = max(0, min(centre - lead, len(parts) - count))
    chosen = parts[start : start + count]
    joiner = "" if _HAN_RUN.search(text) else " "
    return joiner.join(chosen)


def overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of a's distinct words found in b."""
    mine = set(a)
    return len(mine & set(b)) / len(mine) if mine else 0.0
