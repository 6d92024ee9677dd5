"""Which passages an answer cites.

The model is asked to write [n] after each statement. Small models often forget, so when an
answer carries no valid marker, the passages it visibly draws on (a large share of the
answer's words come from one passage) are cited instead. And they sometimes put the wrong
number on a sentence: a marker is moved to another passage when that one plainly holds the
sentence (most of its words) and the marked one does not. A citation can only ever name a
passage that was in the prompt: the prompt passages are the only candidates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.chat.prompt import Passage
from app.chat.quotes import supporting_quote
from app.search.index.tokenize import tokenize

# [1], [1, 3], [1][2], 【1】, [passage 2], [Passage 1, 2], and the prose small models write
# instead: "passage 2", "passage number 1", "第1段".
_MARKER = re.compile(
    r"[\[【]\s*(?:passages?\s*)?(\d+(?:\s*[,，、;]\s*\d+)*)\s*[\]】]"
    r"|\bpassages?\s*(?:number|no\.?|#)?\s*(\d+(?:\s*(?:,|and)\s*\d+)*)"
    r"|第\s*(\d+)\s*[段条篇]",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+")

# Share of the answer's distinct words found in a passage for it to count as a source.
MIN_OVERLAP = 0.5
# Sentences end at these (the marker may come before or after the stop).
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")


@dataclass(frozen=True, slots=True)
class Citation:
    ref: int
    document_id: int
    chunk_id: int
    title: str
    snippet: str
    # The passage's sentence(s) that support the answer ("" when none matches).
    quote: str = ""


def strip_markers(answer: str) -> str:
    """The answer without its citation markers."""
    return _MARKER.sub(" ", answer)


def cited_refs(answer: str, count: int) -> list[int]:
    """The passage numbers the answer's markers name, in order of first mention; numbers
    outside 1..count (made up by the model) are ignored."""
    refs: list[int] = []
    for marker in _MARKER.finditer(answer):
        numbers = next(group for group in marker.groups() if group is not None)
        for number in _NUMBER.findall(numbers):
            ref = int(number)
            if 1 <= ref <= count and ref not in refs:
                refs.append(ref)
    return refs


def _share(words: set[str], passage: set[str]) -> float:
    return len(words & passage) / len(words) if words else 0.0


def passage_words(passages: Sequence[Passage]) -> dict[int, set[str]]:
    """Each passage's distinct search tokens (text and title), by its ref."""
    return {p.ref: set(tokenize(p.text + " " + p.title)) for p in passages}


def checked_refs(answer: str, vocab: dict[int, set[str]]) -> list[int]:
    """The markers' passage numbers, sentence by sentence, each kept unless another passage
    holds most of that sentence's words while the marked one holds at most half as many: then
    that passage is cited instead. `vocab` is `passage_words` of the prompt passages."""
    refs: list[int] = []
    previous: set[str] = set()
    for sentence in _SENTENCE_END.split(answer):
        marked = cited_refs(sentence, len(vocab))
        words = set(tokenize(_MARKER.sub(" ", sentence))) or previous
        previous = words
        for ref in marked:
            if ref not in vocab:
                continue
            own = _share(words, vocab[ref])
            best, better = max((_share(words, v), r) for r, v in vocab.items())
            if better != ref and best >= MIN_OVERLAP and best >= 2 * own:
                ref = better
            if ref not in refs:
                refs.append(ref)
    return refs


def overlapping_refs(answer: str, vocab: dict[int, set[str]]) -> list[int]:
    """Passages that share at least MIN_OVERLAP of the answer's distinct words, best first."""
    words = set(tokenize(answer))
    scored = [
        (-share, ref) for ref, v in vocab.items() if (share := _share(words, v)) >= MIN_OVERLAP
    ]
    return [ref for _, ref in sorted(scored)]


def snippet(text: str, limit: int) -> str:
    """The start of a passage, cut at a word boundary where there is one."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip() + "…"


def citations_for(
    answer: str, passages: Sequence[Passage], *, snippet_chars: int, question: str = ""
) -> list[Citation]:
    """The citations of an answer generated from these prompt passages, each with the
    sentence(s) of its passage that support the answer."""
    vocab = passage_words(passages)
    refs = checked_refs(answer, vocab) or overlapping_refs(answer, vocab)
    by_ref = {p.ref: p for p in passages}
    said = strip_markers(answer)
    return [
        Citation(
            ref=ref,
            document_id=by_ref[ref].document_id,
            chunk_id=by_ref[ref].chunk_id,
            title=by_ref[ref].title,
            snippet=snippet(by_ref[ref].text, snippet_chars),
            quote=supporting_quote(
                said, by_ref[ref].text, question=question, max_chars=snippet_chars
            ),
        )
        for ref in refs
        if ref in by_ref
    ]


def sources_block(citations: Sequence[Citation], heading: str) -> str:
    """The numbered references appended to an OpenAI-compatible answer's text."""
    if not citations:
        return ""
    lines = [f"[{c.ref}] {c.title}" + (f"\n    “{c.quote}”" if c.quote else "") for c in citations]
    return f"\n\n{heading}:\n" + "\n".join(lines)
