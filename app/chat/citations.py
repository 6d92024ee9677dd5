"""Which passages an answer cites.

The model is asked to write [n] after each statement. Small models often forget, so when an
answer carries no valid marker, the passages it visibly draws on (a large share of the
answer's words come from one passage) are cited instead. And they sometimes put the wrong
number on a sentence: a marker is moved to another passage when that one plainly holds the
sentence (most of its words) and the marked one does not. A citation can only ever name a
passage that was in the prompt: the prompt passages are the only candidates.

The answer's text is made to agree with its citations (`cite`): a moved marker is rewritten
to the passage it now names, and a marker naming no prompt passage is removed, so every
marker left in the answer names one of its citations. Only the number is rewritten, in
whatever form the model wrote it ([1], 【1】, "passage 1", "第1段"): the prose forms are part of
a sentence, which a bracketed [n] would not read as.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.chat.prompt import Passage
from app.chat.quotes import highlights, supporting_quote
from app.search.index.tokenize import tokenize

# [1], [1, 3], [1][2], 【1】, [passage 2], [Passage 1, 2], and the prose small models write
# instead: "passage 2", "passage number 1", "第1段".
_BRACKETED = r"[\[【]\s*(?:passages?\s*)?(\d+(?:\s*[,，、;]\s*\d+)*)\s*[\]】]"
_MARKER = re.compile(
    _BRACKETED + r"|\bpassages?\s*(?:number|no\.?|#)?\s*(\d+(?:\s*(?:,|and)\s*\d+)*)"
    r"|第\s*(\d+)\s*[段条篇]",
    re.IGNORECASE,
)
# A run of bracketed markers with the spaces before them ("[2]", " [1][3]", "【1、2】"): what
# follows a sentence's stop and still belongs to it.
MARKER_RUN = re.compile(rf"(?:\s*{_BRACKETED})+", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")
# What separates the numbers of one marker ("1, 3", "1、3", "1 and 3"): kept when rewritten.
_SEPARATOR = re.compile(r"\s*(?:[,，、;]|and)\s*", re.IGNORECASE)
# What may follow a removed marker with no space before it ("days [9]." -> "days.").
_CLOSING = ".,;:!?。，；：！？、)）"

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
    # The answer's words as the quote writes them (`quotes.highlights`): marked in the quote.
    highlight: tuple[str, ...] = ()


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


def _sentences(answer: str) -> list[tuple[str, str]]:
    """The answer's sentences, each with the separator after it ("" for the last one)."""
    pieces: list[tuple[str, str]] = []
    start = 0
    for end in _SENTENCE_END.finditer(answer):
        pieces.append((answer[start : end.start()], end.group(0)))
        start = end.end()
    pieces.append((answer[start:], ""))
    return pieces


def _rewritten(
    sentence: str, resolve: Callable[[int], int | None], refs: list[int]
) -> tuple[str, bool]:
    """The sentence with each marker's numbers resolved (`resolve`: None drops one), a marker
    left with none removed, and whether anything changed; `refs` gets the resolved numbers
    in order of first mention. A number moved to a passage the sentence already cites, or
    naming one a moved number went to, is dropped: "[1][2]", both moved to 2, reads "[2]"."""
    out = ""
    start = 0
    changed = False
    named: set[int] = set()
    moved: set[int] = set()
    for marker in _MARKER.finditer(sentence):
        out += sentence[start : marker.start()]
        start = marker.end()
        group = next(i for i, g in enumerate(marker.groups(), 1) if g is not None)
        numbers = [int(n) for n in _NUMBER.findall(marker.group(group))]
        kept: list[int] = []
        for number in numbers:
            ref = resolve(number)
            if ref is None or ref in kept or (ref in named and (ref != number or ref in moved)):
                continue
            if ref != number:
                moved.add(ref)
            kept.append(ref)
        named.update(kept)
        refs.extend(ref for ref in kept if ref not in refs)
        if kept == numbers:
            out += marker.group(0)
            continue
        changed = True
        if kept:
            # The number(s) rewritten in place; the marker's own form and separator kept.
            separator = _SEPARATOR.search(marker.group(group))
            joiner = separator.group(0) if separator else ", "
            out += (
                sentence[marker.start() : marker.start(group)]
                + joiner.join(str(ref) for ref in kept)
                + sentence[marker.end(group) : marker.end()]
            )
            continue
        # Removed, with the space that set it off: "days [9]." -> "days.", "a [9] b" -> "a b".
        rest = sentence[start:]
        if not rest or rest[0] in _CLOSING:
            out = out.rstrip(" \t")
        elif not out or out[-1].isspace():
            start += len(rest) - len(rest.lstrip(" \t"))
    return out + sentence[start:], changed


def _resolver(words: set[str], vocab: dict[int, set[str]]) -> Callable[[int], int | None]:
    """Which passage a marker's number in a sentence of these words names: the passage holding
    most of the words when that holds at least MIN_OVERLAP of them and twice the marked one's
    share, else the marked one; None when no prompt passage has the number (made up)."""
    scores = [(_share(words, v), r) for r, v in vocab.items()]
    best, better = max(scores) if scores else (0.0, 0)

    def resolve(ref: int) -> int | None:
        if not 1 <= ref <= len(vocab) or ref not in vocab:
            return None
        own = _share(words, vocab[ref])
        if better != ref and best >= MIN_OVERLAP and best >= 2 * own:
            return better
        return ref

    return resolve


def remark(answer: str, vocab: dict[int, set[str]]) -> tuple[str, list[int]]:
    """The answer with its markers checked sentence by sentence, and the passage numbers they
    name in order of first mention. A marker is kept unless another passage holds most of its
    sentence's words while the marked one holds at most half as many: then it names that
    passage instead. A number naming no prompt passage is removed. `vocab` is
    `passage_words` of the prompt passages; with none, every marker is removed."""
    refs: list[int] = []
    previous: set[str] = set()
    out: list[str] = []
    changed = False
    for sentence, end in _sentences(answer):
        # A sentence of markers alone (written after the stop) is the one before it.
        words = set(tokenize(_MARKER.sub(" ", sentence))) or previous
        previous = words
        text, moved = _rewritten(sentence, _resolver(words, vocab), refs)
        changed = changed or moved
        out.append(text + end)
    # Untouched answers come back exactly as written; a removal may leave an edge space.
    return ("".join(out).strip() if changed else answer), refs


def checked_refs(answer: str, vocab: dict[int, set[str]]) -> list[int]:
    """The passage numbers the answer's markers name once checked (see `remark`)."""
    return remark(answer, vocab)[1]


def drop_markers(answer: str) -> str:
    """The answer without its citation markers, for an answer given with no citations."""
    return remark(answer, {})[0]


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


@dataclass(frozen=True, slots=True)
class Cited:
    """An answer whose markers name its citations, with those citations."""

    text: str
    citations: list[Citation]


def cite(
    answer: str,
    passages: Sequence[Passage],
    *,
    snippet_chars: int,
    question: str = "",
    subjects: bool = True,
) -> Cited:
    """The citations of an answer generated from these prompt passages, each with the
    sentence(s) of its passage that support the answer and the answer's words in them
    (`highlight`), and the answer with every marker naming one of them (`remark`): a marker's
    number is moved to the passage its sentence is cited from, and one naming no prompt
    passage is removed. An answer without valid markers is cited by its words and keeps no
    marker. `subjects`: a passage's title and heading words count half choosing its
    supporting sentence (`chat.subject_words`)."""
    vocab = passage_words(passages)
    text, refs = remark(answer, vocab)
    refs = refs or overlapping_refs(answer, vocab)
    by_ref = {p.ref: p for p in passages}
    said = strip_markers(answer)
    citations: list[Citation] = []
    for ref in refs:
        if ref not in by_ref:
            continue
        passage = by_ref[ref]
        quoted = supporting_quote(
            said,
            passage.text,
            question=question,
            max_chars=snippet_chars,
            subject=passage.subject if subjects else "",
        )
        citations.append(
            Citation(
                ref=ref,
                document_id=passage.document_id,
                chunk_id=passage.chunk_id,
                title=passage.title,
                snippet=snippet(passage.text, snippet_chars),
                quote=quoted,
                highlight=tuple(highlights(said, quoted)),
            )
        )
    return Cited(text, citations)


def citations_for(
    answer: str, passages: Sequence[Passage], *, snippet_chars: int, question: str = ""
) -> list[Citation]:
    """The citations of an answer generated from these prompt passages (see `cite`)."""
    return cite(answer, passages, snippet_chars=snippet_chars, question=question).citations


def sources_block(citations: Sequence[Citation], heading: str, *, shown: str = "") -> str:
    """The numbered references appended to an OpenAI-compatible answer's text, each with its
    supporting quote unless the `shown` answer text already quotes it."""
    if not citations:
        return ""
    lines = [
        f"[{c.ref}] {c.title}" + (f"\n    “{c.quote}”" if c.quote and c.quote not in shown else "")
        for c in citations
    ]
    return f"\n\n{heading}:\n" + "\n".join(lines)
