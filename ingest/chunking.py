"""Structure-aware chunking: sections never mix, sentences stay whole where they fit.

Pipeline per section (a run of consecutive blocks with the same heading_path):
blocks -> units (sentences; oversized sentences split on lines, then on token boundaries
into balanced pieces) -> a trailing unit under ``min_tokens`` joins its predecessor ->
greedy packing up to ``max_tokens`` -> each new chunk starts with the trailing whole
sentences of the previous one (at most ``overlap_tokens``; when even the last sentence is
longer, its final tokens) so context carries across the cut.

Because packing is greedy, a chunk is only closed when the next unit does not fit, so
``min_tokens`` acts on units, not on finished chunks. Budgets are upper bounds: every
chunk's ``count_tokens`` is at most ``max_tokens``, over-long words included, and its length
at most ``max_chars(config)`` characters (whitespace costs no tokens, so a token budget alone
lets two words and a megabyte of spaces between them through as one chunk).

Heading blocks contribute through ``heading_path`` rather than chunk text, except when a
heading has neither body text nor subsections: then its text is the chunk, so nothing a
parser produced is silently dropped. A heading is repeated with every chunk under it (in the
stored path and in the embedded passage), so one longer than ``MAX_HEADING_CHARS`` is body
text, not a heading: its text is chunked like a paragraph and its path entry is clipped.

Time is linear in the text and memory proportional to it, whatever its shape (one 19 MB line,
no spaces, no punctuation, CJK only): no regex here may rescan text it has already passed,
and an over-long line is cut while it is read, never tokenised into a list first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Protocol

from ingest.parsers.base import Block, BlockKind, ParsedDocument

# Han, kana, bopomofo, hangul and the CJK compatibility / extension planes.
_CJK = (
    "\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_TOKEN = re.compile(rf"(?P<cjk>[{_CJK}])|(?P<word>[^\W_{_CJK}]+)|\S")
_WORD = re.compile(rf"[^\W_{_CJK}]+")
_CHARS_PER_WORD_TOKEN = 6

_CLOSERS = "\"'”’)\\]»）」』》】"
_SENTENCE_END = re.compile(
    # Western terminators need following whitespace ("3.14", "e.g.x" are not ends);
    # Chinese ones end a sentence wherever they stand. A match starts only where a run of
    # terminators starts: retried inside a run of 100 000 dots with no space after it, the
    # search would rescan the rest of the run from every dot (quadratic).
    rf"(?<![.!?])[.!?]+[{_CLOSERS}]*(?=\s)|[。！？；…]+[{_CLOSERS}]*"
)
_LINE_BREAK = re.compile(r"\n+")

# Blocks of these kinds are lines of one list or table; a single newline joins them.
_LINE_KINDS: frozenset[BlockKind] = frozenset({"list", "table"})

# Longer "headings" are body text (see the module docstring); 200 characters is a long title.
MAX_HEADING_CHARS = 200
# Prose stays under 7 characters per token (a word token is at most 6 letters, plus a space);
# 16 leaves room for indented code, so the character bound only ever cuts padding.
_MAX_CHARS_PER_TOKEN = 16
# Whitespace between two pieces is kept as it was up to this length; a longer run (padding,
# a code block's hundred blank lines) becomes one blank line or one space.
_MAX_SEP_CHARS = 16


class ChunkingOptions(Protocol):
    """Token budgets for chunks, in ``count_tokens`` units (the `chunking` settings section,
    app/kit/settings.py ChunkingOptions, checks them)."""

    @property
    def max_tokens(self) -> int: ...

    @property
    def overlap_tokens(self) -> int: ...

    @property
    def min_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one section's text, ready to embed and index."""

    text: str
    position: int
    heading_path: tuple[str, ...]
    token_count: int


@dataclass(frozen=True, slots=True)
class _Unit:
    """An indivisible run of text; ``sep`` is the whitespace that preceded it in the source."""

    text: str
    tokens: int
    sep: str


def count_tokens(text: str) -> int:
    """Estimate tokens: one per CJK character or symbol, ceil(len/6) per run of letters/digits."""
    # Every non-space character outside a word run is a token of its own, so only the words
    # need a Python-level look (a loop over every token made a 19 MB line of dots slow).
    lengths = [len(word) for word in _WORD.findall(text)]
    non_space = sum(map(len, text.split()))
    return non_space - sum(lengths) + sum(-(-n // _CHARS_PER_WORD_TOKEN) for n in lengths)


def max_chars(config: ChunkingOptions) -> int:
    """The most characters a chunk may hold under ``config``."""
    return config.max_tokens * _MAX_CHARS_PER_TOKEN


def split_sentences(text: str) -> list[str]:
    """Split text after .!? followed by whitespace and after 。！？；… ; pieces are stripped."""
    return [piece for _, piece in _split_at(text, _sentence_spans(text))]


def chunk_document(doc: ParsedDocument, config: ChunkingOptions) -> list[Chunk]:
    """Cut a parsed document into ordered chunks that respect sections and token budgets."""
    sections = [
        (path, list(blocks))
        for path, blocks in groupby(
            _bounded_headings(block for block in doc.blocks if block.text.strip()),
            key=lambda b: b.heading_path,
        )
    ]
    chunks: list[Chunk] = []
    for index, (path, blocks) in enumerate(sections):
        body = [block for block in blocks if block.kind != "heading"]
        if not body:
            following = sections[index + 1][0] if index + 1 < len(sections) else ()
            if following[: len(path)] == path and len(following) > len(path):
                continue  # the subsection's chunks carry this heading in their path
            body = blocks
        for text in _pack(_section_units(body, config), config):
            chunks.append(Chunk(text, len(chunks), path, count_tokens(text)))
    return chunks


def _bounded_headings(blocks: Iterable[Block]) -> Iterator[Block]:
    """Blocks whose heading paths hold no entry over ``MAX_HEADING_CHARS``.

    An over-long heading block becomes a paragraph (its text is kept whole as body text) and
    every path naming it names its clipped form instead.
    """
    clipped: dict[tuple[str, ...], tuple[str, ...]] = {}
    for block in blocks:
        path = block.heading_path
        if any(len(heading) > MAX_HEADING_CHARS for heading in path):
            if path not in clipped:
                clipped[path] = tuple(_clip_heading(heading) for heading in path)
            path = clipped[path]
        kind: BlockKind = block.kind
        if kind == "heading" and len(block.text) > MAX_HEADING_CHARS:
            kind = "paragraph"
        if path is not block.heading_path or kind != block.kind:
            block = Block(block.text, path, kind)
        yield block


def _clip_heading(heading: str) -> str:
    if len(heading) <= MAX_HEADING_CHARS:
        return heading
    return heading[: MAX_HEADING_CHARS - 1].rstrip() + "…"


def _section_units(blocks: Sequence[Block], config: ChunkingOptions) -> list[_Unit]:
    limit, char_limit = config.max_tokens, max_chars(config)
    units: list[_Unit] = []
    previous_kind: BlockKind | None = None
    for block in blocks:
        joiner = "\n" if block.kind == previous_kind and block.kind in _LINE_KINDS else "\n\n"
        block_units = _block_units(block.text, limit, char_limit)
        if block_units:
            first = block_units[0]
            units.append(_Unit(first.text, first.tokens, joiner))
            units.extend(block_units[1:])
        previous_kind = block.kind
    if (
        len(units) >= 2
        and units[-1].tokens < config.min_tokens
        and units[-2].tokens + units[-1].tokens <= limit
        and len(units[-2].text) + _size(units[-1]) <= char_limit
    ):
        # A tiny trailing piece ("Thanks.", a last short line) travels with its predecessor,
        # so the section cannot end in a chunk that is all overlap and a scrap of new text.
        tail, before = units.pop(), units.pop()
        units.append(
            _Unit(before.text + tail.sep + tail.text, before.tokens + tail.tokens, before.sep)
        )
    return units


def _block_units(text: str, limit: int, char_limit: int) -> list[_Unit]:
    units: list[_Unit] = []
    for sep, sentence in _split_at(text, _sentence_spans(text)):
        tokens = count_tokens(sentence)
        if tokens <= limit and len(sentence) <= char_limit:
            units.append(_Unit(sentence, tokens, sep))
            continue
        for line_index, (line_sep, line) in enumerate(_split_at(sentence, _line_spans(sentence))):
            line_tokens = count_tokens(line)
            first_sep = sep if line_index == 0 else line_sep
            if line_tokens <= limit and len(line) <= char_limit:
                units.append(_Unit(line, line_tokens, first_sep))
                continue
            pieces = _split_tokens(line, limit, line_tokens, char_limit)
            for piece_index, (piece_sep, piece) in enumerate(pieces):
                units.append(
                    _Unit(piece, count_tokens(piece), first_sep if piece_index == 0 else piece_sep)
                )
    return units


def _size(unit: _Unit) -> int:
    """Characters ``unit`` adds to a chunk it joins (its separator included)."""
    return len(unit.sep) + len(unit.text)


def _pack(units: list[_Unit], config: ChunkingOptions) -> Iterator[str]:
    char_limit = max_chars(config)
    current: list[_Unit] = []
    current_tokens = current_chars = 0
    for unit in units:
        if current and (
            current_tokens + unit.tokens > config.max_tokens
            or current_chars + _size(unit) > char_limit
        ):
            yield _join(current)
            budget = min(config.overlap_tokens, config.max_tokens - unit.tokens)
            current = _overlap(current, budget, char_limit - _size(unit))
            current_tokens = sum(u.tokens for u in current)
            current_chars = sum(_size(u) for u in current)
        current.append(unit)
        current_tokens += unit.tokens
        current_chars += _size(unit)
    if current:
        yield _join(current)


def _join(units: list[_Unit]) -> str:
    return (units[0].text + "".join(u.sep + u.text for u in units[1:])).strip()


def _overlap(previous: list[_Unit], budget: int, char_budget: int) -> list[_Unit]:
    if budget <= 0 or char_budget <= 0 or not previous:
        return []
    taken: list[_Unit] = []
    total = chars = 0
    for unit in reversed(previous):
        if total + unit.tokens > budget or chars + _size(unit) > char_budget:
            break
        taken.append(unit)
        total += unit.tokens
        chars += _size(unit)
    if taken:
        return taken[::-1]
    # Even the last sentence is longer than the budget: repeat its final tokens instead.
    tail = _tail(previous[-1].text, budget)[-char_budget:].strip()
    return [_Unit(tail, count_tokens(tail), "")] if tail else []


def _tail(text: str, budget: int) -> str:
    start = len(text)
    remaining = budget
    for match in reversed(list(_TOKEN.finditer(text))):
        word = match.group("word")
        weight = math.ceil(len(word) / _CHARS_PER_WORD_TOKEN) if word else 1
        if weight > remaining:
            if start == len(text) and word:
                # A single over-long word: keep as many of its last characters as fit.
                start = match.end() - remaining * _CHARS_PER_WORD_TOKEN
            break
        remaining -= weight
        start = match.start()
    return text[start:].strip()


def _split_tokens(text: str, limit: int, total: int, char_limit: int) -> list[tuple[str, str]]:
    """Cut ``text`` (``total`` tokens) on token boundaries into near-equal pieces of at most
    ``limit`` tokens and ``char_limit`` characters.

    Pieces are balanced rather than filled greedily so the last one is never a tiny scrap.
    Tokens are read as they are matched, never listed: a one-line 19 MB file is millions of
    tokens, and a tuple per token cost gigabytes.
    """
    target = math.ceil(total / math.ceil(total / limit)) if total else limit
    spans: list[tuple[int, int]] = []
    start = end = -1
    accumulated = 0
    for match in _TOKEN.finditer(text):
        token_start, token_end = match.span()
        # Only a word is longer than one character: this is count_tokens' weight.
        weight = -(-(token_end - token_start) // _CHARS_PER_WORD_TOKEN)
        if weight > target:
            # A word longer than a whole piece is sliced into fixed-size character runs.
            if accumulated:
                spans.append((start, end))
                accumulated = 0
            step = target * _CHARS_PER_WORD_TOKEN
            spans.extend(
                (at, min(at + step, token_end)) for at in range(token_start, token_end, step)
            )
            continue
        if accumulated and (accumulated + weight > target or token_end - start > char_limit):
            spans.append((start, end))
            accumulated = 0
        if not accumulated:
            start = token_start
        end = token_end
        accumulated += weight
    if accumulated:
        spans.append((start, end))
    return _split_at(text, spans)


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    return spans


def _line_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    start = 0
    for match in _LINE_BREAK.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return spans


def _split_at(text: str, spans: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """Turn spans into ``(separator, stripped piece)`` pairs, dropping blank pieces.

    The separator is the source text between the previous piece and this one (whitespace,
    or nothing inside CJK text or a sliced word), so joining ``sep + piece`` reproduces the
    original text minus its leading and trailing whitespace, except that a separator longer
    than ``_MAX_SEP_CHARS`` becomes one blank line (when it holds a line break) or one space.
    """
    pieces: list[tuple[str, str]] = []
    previous_end = 0
    for start, end in spans:
        raw = text[start:end]
        stripped = raw.strip()
        if not stripped:
            continue
        piece_start = start + (len(raw) - len(raw.lstrip()))
        sep = text[previous_end:piece_start] if pieces else ""
        if len(sep) > _MAX_SEP_CHARS:
            sep = "\n\n" if "\n" in sep else " "
        pieces.append((sep, stripped))
        previous_end = piece_start + len(stripped)
    return pieces
