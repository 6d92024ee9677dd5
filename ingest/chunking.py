"""Structure-aware chunking: sections never mix, sentences stay whole where they fit, table
rows stay whole and under their header.

Pipeline per section (a run of consecutive blocks with the same heading_path):
blocks -> units (sentences; oversized sentences split on lines, then on token boundaries
into balanced pieces; a table row is one unit) -> segments (runs of units that may share a
chunk) -> a trailing unit under ``min_tokens`` joins its predecessor -> greedy packing up to
``max_tokens`` -> each new chunk starts with the trailing whole sentences of the previous one
(at most ``overlap_tokens``; when even the last sentence is longer, its final tokens) so
context carries across the cut. Nothing overlaps across a segment boundary.

Leads: a unit may belong to a group whose lead must be read before it: a table row under its
table's header row, an answer under its question, an article's text under its marker
("第十条", "Article 5"). Every chunk holding a unit of a group holds the group's lead just
before the group's first unit in it, so "B3 | 30k-40k" is always read under "Band | Salary
range"; leads nest (a table inside an answer repeats the question, then the header). A lead
costs at most half of the budget (a question or marker a quarter, a header what the question
left of the half): a longer one is kept whole in place, as text, and repeated clipped ("…").

Templates (``ChunkingOptions.template``), each also row-aware for tables:
- ``general``: the pipeline above.
- ``table``: one chunk per table row (with its header); other text as ``general``.
- ``qa``: a question (a line ending in ? or ？ of at most ``_MAX_QUESTION_CHARS``, a line
  starting "Q:" / "问：", or a section heading ending in ?) and its answer up to the next
  question are one segment, led by the question; consecutive question lines (up to twice
  ``_MAX_QUESTION_CHARS`` in all) are one question.
- ``articles``: a segment boundary before every article marker at a line start (第X条,
  "Article N", "Section N", "§ N"), the marker leading the article; a short chapter line (第X章,
  第X节, "Chapter N", "Part N") starts a segment that the next article joins.
- ``whole``: one segment per document, headings as text; still bounded, so a document over
  ``max_tokens`` is cut as ``general`` cuts a section (the last resort).
``separators`` are literal strings (at most ``MAX_SEPARATORS``, each 1 to
``MAX_SEPARATOR_CHARS`` characters) that start a new segment wherever they occur in body text
(the separator begins the next chunk; a table row is never cut at one); a separator made of
whitespace also matches where blocks meet ("\\n\\n" between paragraphs, "\\n" between list
items and table rows).

Because packing is greedy, a chunk is only closed when the next unit does not fit, so
``min_tokens`` acts on units, not on finished chunks. Budgets are upper bounds: every
chunk's ``count_tokens`` is at most ``max_tokens``, over-long words, rows and leads included,
and its length at most ``max_chars(config)`` characters (whitespace costs no tokens, so a
token budget alone lets two words and a megabyte of spaces between them through as one chunk).

Heading blocks contribute through ``heading_path`` rather than chunk text, except when a
heading has neither body text nor subsections: then its text is the chunk, so nothing a
parser produced is silently dropped. A heading is repeated with every chunk under it (in the
stored path and in the embedded passage), so one longer than ``MAX_HEADING_CHARS`` is body
text, not a heading: its text is chunked like a paragraph and its path entry is clipped.

Time is linear in the text and memory proportional to it, whatever its shape (one 19 MB line,
no spaces, no punctuation, CJK only, a 10 000-row table, a megabyte in one cell): no regex here
may rescan text it has already passed, and an over-long line is cut while it is read, never
tokenised into a list first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Literal, Protocol, get_args

from ingest.parsers.base import Block, BlockKind, ParsedDocument

Template = Literal["general", "qa", "table", "articles", "whole"]
TEMPLATES: tuple[str, ...] = get_args(Template)
MAX_SEPARATORS = 8
MAX_SEPARATOR_CHARS = 16

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
# A separator made only of these ends the piece before its cut (see _Separators).
_CLOSING_PUNCTUATION = frozenset(".!?;,:…。！？；，、：" + _CLOSERS)

# Markers are matched at a line start only (a mention inside a sentence, "依照第十条", is
# no boundary), with bounded repeats so a hostile line costs no more than its first characters.
_ZH_NUMERAL = "0-9０-９零〇一二三四五六七八九十百千万两"
_ARTICLE_MARKER = re.compile(
    rf"[ \t\u3000]*(第[{_ZH_NUMERAL}]{{1,12}}条(?:之[一二三四五六七八九十]{{1,3}})?"
    r"|(?:Article|ARTICLE|Art\.|Section|SECTION|Sec\.)[ \t]*"
    r"(?:\d{1,6}(?:\.\d{1,6}){0,4}[A-Za-z]?|[IVXLCDM]{1,8})\b"
    r"|§{1,2}[ \t]*\d{1,6}(?:\.\d{1,6}){0,4}[A-Za-z]?)"
)
_CHAPTER_MARKER = re.compile(
    rf"[ \t\u3000]*(?:第[{_ZH_NUMERAL}]{{1,12}}(?:章|节|编|部分)"
    r"|(?:Chapter|CHAPTER|Part|PART)[ \t]+(?:\d{1,6}|[IVXLCDM]{1,8})\b)"
)
_QUESTION_PREFIX = re.compile(
    r"[ \t\u3000]*(?:Q(?:uestion)?|问题?)[ \t]*\d{0,6}[ \t]*[:：]", re.IGNORECASE
)
_ANSWER_PREFIX = re.compile(
    r"[ \t\u3000]*(?:A(?:nswer)?|答)[ \t]*\d{0,6}[ \t]*[:：]", re.IGNORECASE
)
# A longer line ending in "?" is a paragraph that happens to end in a question, not a question.
_MAX_QUESTION_CHARS = 300

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
# A lead may take 1/N of a chunk's budget, its enclosing leads included (module docstring).
_GROUP_LEAD_SHARE = 4
_HEADER_SHARE = 2


class ChunkingOptions(Protocol):
    """How to cut documents: token budgets in ``count_tokens`` units, a template and literal
    separators (the `chunking` settings section, app/kit/settings.py ChunkingConfig, checks
    them; ``chunk_document`` raises ValueError for values outside the module's limits)."""

    @property
    def max_tokens(self) -> int: ...

    @property
    def overlap_tokens(self) -> int: ...

    @property
    def min_tokens(self) -> int: ...

    @property
    def template(self) -> str: ...

    @property
    def separators(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one section's text, ready to embed and index."""

    text: str
    position: int
    heading_path: tuple[str, ...]
    token_count: int


@dataclass(frozen=True, slots=True, eq=False)
class _Lead:
    """Text read before every chunk's part of a group; compared by identity (two tables with
    the same header are two groups). ``joiner`` goes between it and the group's text."""

    text: str
    tokens: int
    joiner: str
    parent: _Lead | None

    @property
    def chain(self) -> tuple[_Lead, ...]:
        """This lead and the ones enclosing it, outermost first."""
        return (*self.parent.chain, self) if self.parent is not None else (self,)


@dataclass(frozen=True, slots=True)
class _Unit:
    """An indivisible run of text; ``sep`` is the whitespace that preceded it in the source.

    ``lead`` names the group it belongs to, ``row`` marks (a piece of) a table row, and
    ``heads`` a lead's own text inserted by the packer."""

    text: str
    tokens: int
    sep: str
    lead: _Lead | None = None
    row: bool = False
    heads: bool = False


def _chain(lead: _Lead | None) -> tuple[_Lead, ...]:
    return lead.chain if lead is not None else ()


def _chain_tokens(leads: Sequence[_Lead]) -> int:
    return sum(lead.tokens for lead in leads)


def _chain_chars(leads: Sequence[_Lead]) -> int:
    return sum(len(lead.text) + len(lead.joiner) for lead in leads)


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
    """Cut a parsed document into ordered chunks that respect sections, tables, the template
    and the token budgets."""
    template = config.template
    if template not in TEMPLATES:
        raise ValueError(f"unknown chunking template {template!r}")
    separators = _Separators(config.separators)
    blocks = _bounded_headings(block for block in doc.blocks if block.text.strip())
    if template == "whole":
        sections = [((), [_as_body(block) for block in blocks])]
    else:
        sections = [
            (path, list(group)) for path, group in groupby(blocks, key=lambda b: b.heading_path)
        ]
    chunks: list[Chunk] = []
    for index, (path, section) in enumerate(sections):
        body = [block for block in section if block.kind != "heading"]
        reader = _SectionReader(config, template, separators)
        if not body:
            following = sections[index + 1][0] if index + 1 < len(sections) else ()
            if following[: len(path)] == path and len(following) > len(path):
                continue  # the subsection's chunks carry this heading in their path
            body = section
        elif template == "qa" and path and _is_question(path[-1]):
            reader.open_group(path[-1], "\n")  # "## How do I reset it?" leads its answer
        for segment in reader.read(body):
            for text in _pack(segment, config):
                chunks.append(Chunk(text, len(chunks), path, count_tokens(text)))
    return chunks


def _as_body(block: Block) -> Block:
    """``block`` outside any section: a heading is a paragraph of its own."""
    kind: BlockKind = "paragraph" if block.kind == "heading" else block.kind
    return Block(block.text, (), kind, block.table_header)


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
            block = Block(block.text, path, kind, block.table_header)
        yield block


def _clip_heading(heading: str) -> str:
    if len(heading) <= MAX_HEADING_CHARS:
        return heading
    return heading[: MAX_HEADING_CHARS - 1].rstrip() + "…"


def _is_question(line: str) -> bool:
    if _ANSWER_PREFIX.match(line):
        return False
    if _QUESTION_PREFIX.match(line):
        return True
    text = line.strip()
    return len(text) <= _MAX_QUESTION_CHARS and text.rstrip(_CLOSERS + "*_").endswith(("?", "？"))


def _is_chapter(line: str) -> bool:
    return len(line.strip()) <= MAX_HEADING_CHARS and _CHAPTER_MARKER.match(line) is not None


class _Separators:
    """The configured literal separators: where body text starts a new segment.

    A run of separators is one cut. A run made only of sentence or clause punctuation
    (``_CLOSING_PUNCTUATION``: "。", ";", "!?") ends the piece before the cut, as it ends its
    sentence; any other run ("###", "Q:", "第", whitespace) starts the piece after it.
    """

    def __init__(self, separators: Sequence[str]) -> None:
        if len(separators) > MAX_SEPARATORS:
            raise ValueError(f"at most {MAX_SEPARATORS} chunking separators")
        if any(not 1 <= len(s) <= MAX_SEPARATOR_CHARS for s in separators):
            raise ValueError(f"a chunking separator is 1 to {MAX_SEPARATOR_CHARS} characters")
        self._blank = tuple(s for s in separators if not s.strip())
        # Longest first, so "###" wins over "#" where both start; at most 8 literals of at
        # most 16 characters are tried at each position, and a run is consumed in one match:
        # linear in the text.
        ordered = sorted(set(separators), key=len, reverse=True)
        alternatives = "|".join(map(re.escape, ordered))
        self._pattern = re.compile(f"(?:{alternatives})+") if ordered else None

    def between_blocks(self, joiner: str) -> bool:
        """Whether a whitespace separator cuts where two blocks meet with ``joiner``."""
        return any(separator in joiner for separator in self._blank)

    def split(self, text: str) -> list[str]:
        """``text`` cut at every run of separators that follows some other text."""
        if self._pattern is None:
            return [text]
        pieces: list[str] = []
        start = previous_end = 0
        content = False  # whether the piece since ``start`` holds more than separators
        for match in self._pattern.finditer(text):
            # Only the text since the last match is looked at: each character once.
            content = content or bool(text[previous_end : match.start()].strip())
            if content:
                ends = _CLOSING_PUNCTUATION.issuperset(match.group())
                cut = match.end() if ends else match.start()
                pieces.append(text[start:cut])
                start, content = cut, False
            previous_end = match.end()
        pieces.append(text[start:])
        return pieces


class _SectionReader:
    """One section's blocks -> segments (lists of units packed on their own), by template."""

    def __init__(self, config: ChunkingOptions, template: str, separators: _Separators) -> None:
        self.limit = config.max_tokens
        self.char_limit = max_chars(config)
        self.min_tokens = config.min_tokens
        self.template = template
        self.separators = separators
        self.segments: list[list[_Unit]] = [[]]
        # The open group (a question, an article): its lead, full text, whether any unit
        # has been added since it opened.
        self.lead: _Lead | None = None
        self._lead_text = ""
        self._lead_used = True
        # articles: the segment holds only a chapter line, which the next article joins.
        self._title_only = False
        self._previous_kind: BlockKind | None = None

    def read(self, blocks: Sequence[Block]) -> list[list[_Unit]]:
        index = 0
        while index < len(blocks):
            block = blocks[index]
            same_lines = block.kind == self._previous_kind and block.kind in _LINE_KINDS
            joiner = "\n" if same_lines else "\n\n"
            if self._previous_kind is not None and self.separators.between_blocks(joiner):
                self._cut()
            if block.kind == "table":
                index = self._table(blocks, index, joiner)
            else:
                self._text(block, joiner)
                index += 1
            self._previous_kind = block.kind
        self._close_group()
        return [self._merge_tail(segment) for segment in self.segments if segment]

    def open_group(self, text: str, joiner: str, *, cut: bool = True) -> None:
        """Start a group led by ``text`` (a question, an article marker)."""
        if (
            self.template == "qa"
            and self.lead is not None
            and not self._lead_used
            # Bounded, or 100 000 lines ending in "?" would be copied into one another.
            and len(self._lead_text) + len(text) < 2 * _MAX_QUESTION_CHARS
        ):
            text = f"{self._lead_text}\n{text}"  # consecutive question lines: one question
        else:
            self._close_group()
            if cut:
                self._cut()
        self._lead_text = text
        self.lead, clipped = self._make_lead(text, joiner, None, _GROUP_LEAD_SHARE)
        if clipped:
            self._plain(text, "\n", lead=None)
        self._lead_used = clipped

    def _close_group(self) -> None:
        # A question without an answer (an article marker without text) is still text.
        lead, self.lead = self.lead, None
        if lead is not None and not self._lead_used:
            self._plain(self._lead_text, "\n", lead=None)
        self._lead_used = True

    def _cut(self) -> None:
        if self.segments[-1]:
            self.segments.append([])
        self._title_only = False

    def _add(self, unit: _Unit) -> None:
        self.segments[-1].append(unit)
        self._lead_used = True
        self._title_only = False

    def _budget(self, lead: _Lead | None) -> tuple[int, int]:
        """Tokens and characters a unit under ``lead`` may hold (its leads take the rest)."""
        chain = _chain(lead)
        return self.limit - _chain_tokens(chain), self.char_limit - _chain_chars(chain)

    def _make_lead(
        self, text: str, joiner: str, parent: _Lead | None, share: int
    ) -> tuple[_Lead | None, bool]:
        """A lead for ``text`` under ``parent``, and whether it had to be clipped (then the
        caller keeps the full text as body text; with no room at all the lead is ``parent``)."""
        chain = _chain(parent)
        tokens_left = self.limit // share - _chain_tokens(chain)
        chars_left = self.char_limit // share - _chain_chars(chain) - len(joiner)
        tokens = count_tokens(text)
        if tokens <= tokens_left and len(text) <= chars_left:
            return _Lead(text, tokens, joiner, parent), False
        if tokens_left < 2 or chars_left < 2:
            return parent, True
        head = _split_tokens(text, tokens_left - 1, tokens, chars_left - 1)[0][1]
        head = head[: chars_left - 1] + "…"
        return _Lead(head, count_tokens(head), joiner, parent), True

    def _table(self, blocks: Sequence[Block], index: int, joiner: str) -> int:
        """Add the table starting at ``blocks[index]``; return the index after it."""
        end = index + 1
        while end < len(blocks) and blocks[end].kind == "table" and not blocks[end].table_header:
            end += 1
        first = blocks[index]
        rows = list(blocks[index + 1 : end]) if first.table_header else list(blocks[index:end])
        lead = self.lead
        if first.table_header and rows:
            lead, clipped = self._make_lead(first.text, "\n", self.lead, _HEADER_SHARE)
            if clipped:
                self._row(first.text, joiner, self.lead)
                joiner = "\n"
        elif first.table_header:
            rows = [first]  # a header with no rows is a row of its own
        per_row = self.template == "table" or self.separators.between_blocks("\n")
        for row in rows:
            if per_row:
                self._cut()
            self._row(row.text, joiner, lead)
            joiner = "\n"
        if self.template == "table":
            self._cut()
        return end

    def _row(self, text: str, sep: str, lead: _Lead | None) -> None:
        text = text.strip()
        tokens_left, chars_left = self._budget(lead)
        tokens = count_tokens(text)
        if tokens <= tokens_left and len(text) <= chars_left:
            self._add(_Unit(text, tokens, sep, lead, row=True))
            return
        # Only a row longer than a whole chunk is cut, on token boundaries, each piece still
        # under the header.
        pieces = _split_tokens(text, tokens_left, tokens, chars_left)
        for piece_index, (piece_sep, piece) in enumerate(pieces):
            unit_sep = sep if piece_index == 0 else piece_sep
            self._add(_Unit(piece, count_tokens(piece), unit_sep, lead, row=True))

    def _text(self, block: Block, joiner: str) -> None:
        # A line of code ending in "?" is no question, nor "Section 3" in code an article.
        if self.template == "qa" and block.kind != "code":
            self._questions(block.text, joiner)
        elif self.template == "articles" and block.kind != "code":
            self._articles(block.text, joiner)
        else:
            self._plain(block.text, joiner, lead=self.lead)

    def _plain(self, text: str, sep: str, *, lead: _Lead | None) -> None:
        tokens_left, chars_left = self._budget(lead)
        for piece_index, piece in enumerate(self.separators.split(text)):
            if piece_index:
                self._cut()
            units = _block_units(piece, tokens_left, chars_left, lead)
            if units:
                units[0] = _Unit(units[0].text, units[0].tokens, sep, lead)
                self.segments[-1].extend(units)
                self._lead_used = True
                self._title_only = False

    def _questions(self, text: str, joiner: str) -> None:
        sep, start, position = joiner, 0, 0
        for line in text.split("\n"):
            line_start, position = position, position + len(line) + 1
            if not _is_question(line):
                continue
            if text[start:line_start].strip():
                self._plain(text[start:line_start], sep, lead=self.lead)
                sep = "\n"
            self.open_group(line.strip(), "\n")
            start = position
        if text[start:].strip():
            self._plain(text[start:], sep, lead=self.lead)

    def _articles(self, text: str, joiner: str) -> None:
        sep, start, position = joiner, 0, 0
        for line in text.split("\n"):
            line_start, position = position, position + len(line) + 1
            marker = _ARTICLE_MARKER.match(line)
            if marker is None and not _is_chapter(line):
                continue
            if text[start:line_start].strip():
                self._plain(text[start:line_start], sep, lead=self.lead)
                sep = "\n"
            if marker is None:
                self._close_group()
                self._cut()
                self._plain(line.strip(), sep, lead=None)
                self._title_only = True
                sep, start = "\n", position
                continue
            rest = line[marker.end() :]
            body = rest.lstrip()
            gap = rest[: len(rest) - len(body)]
            # The marker leads the article's text with the whitespace it had ("第十条　为了",
            # "Article 5 The"), or a line break when the text starts on the next line.
            lead_joiner = "\n" if not body else gap if len(gap) <= _MAX_SEP_CHARS else " "
            self.open_group(marker.group(1).strip(), lead_joiner, cut=not self._title_only)
            start = line_start + marker.end() + len(gap) if body else position
        if text[start:].strip():
            self._plain(text[start:], sep, lead=self.lead)

    def _merge_tail(self, units: list[_Unit]) -> list[_Unit]:
        # A tiny trailing piece ("Thanks.", a last short line) travels with its predecessor,
        # so the segment cannot end in a chunk that is all overlap and a scrap of new text.
        if len(units) < 2:
            return units
        before, tail = units[-2], units[-1]
        tokens_left, chars_left = self._budget(tail.lead)
        if (
            tail.tokens < self.min_tokens
            and tail.lead is before.lead
            and tail.row == before.row
            and before.tokens + tail.tokens <= tokens_left
            and len(before.text) + _size(tail) <= chars_left
        ):
            text = before.text + tail.sep + tail.text
            units[-2:] = [
                _Unit(text, before.tokens + tail.tokens, before.sep, before.lead, before.row)
            ]
        return units


def _block_units(text: str, limit: int, char_limit: int, lead: _Lead | None) -> list[_Unit]:
    units: list[_Unit] = []
    for sep, sentence in _split_at(text, _sentence_spans(text)):
        tokens = count_tokens(sentence)
        if tokens <= limit and len(sentence) <= char_limit:
            units.append(_Unit(sentence, tokens, sep, lead))
            continue
        for line_index, (line_sep, line) in enumerate(_split_at(sentence, _line_spans(sentence))):
            line_tokens = count_tokens(line)
            first_sep = sep if line_index == 0 else line_sep
            if line_tokens <= limit and len(line) <= char_limit:
                units.append(_Unit(line, line_tokens, first_sep, lead))
                continue
            pieces = _split_tokens(line, limit, line_tokens, char_limit)
            for piece_index, (piece_sep, piece) in enumerate(pieces):
                piece_first = first_sep if piece_index == 0 else piece_sep
                units.append(_Unit(piece, count_tokens(piece), piece_first, lead))
    return units


def _size(unit: _Unit) -> int:
    """Characters ``unit`` adds to a chunk it joins (its separator included)."""
    return len(unit.sep) + len(unit.text)


def _pack(units: list[_Unit], config: ChunkingOptions) -> Iterator[str]:
    limit, char_limit = config.max_tokens, max_chars(config)
    current: list[_Unit] = []
    current_tokens = current_chars = 0
    active: tuple[_Lead, ...] = ()  # the leads the chunk's last unit is read under
    chain: tuple[_Lead, ...]
    opening: tuple[_Lead, ...]
    for unit in units:
        if unit.lead is None:  # the common case, kept cheap: a sentence of prose
            chain = opening = ()
            lead_tokens = lead_chars = 0
        else:
            chain = unit.lead.chain
            opening = _opening(active, chain)
            lead_tokens, lead_chars = _chain_tokens(opening), _chain_chars(opening)
        if current and (
            current_tokens + unit.tokens + lead_tokens > limit
            or current_chars + _size(unit) + lead_chars > char_limit
        ):
            yield _join(current)
            # The new chunk: the unit's leads, then overlap from its own group only (a
            # header's rows, an answer's sentences), then the unit.
            budget = min(config.overlap_tokens, limit - unit.tokens - _chain_tokens(chain))
            char_budget = char_limit - _size(unit) - _chain_chars(chain)
            kept = _overlap(_same_group(current, unit.lead), budget, char_budget)
            current = _opened(chain, [*kept, unit])
            current_tokens = sum(u.tokens for u in current)
            current_chars = sum(_size(u) for u in current)
        elif opening:
            added = _opened(opening, [unit])
            current.extend(added)
            current_tokens += sum(u.tokens for u in added)
            current_chars += sum(_size(u) for u in added)
        else:
            current.append(unit)
            current_tokens += unit.tokens
            current_chars += len(unit.sep) + len(unit.text)
        active = chain
    if current:
        yield _join(current)


def _opening(active: tuple[_Lead, ...], chain: tuple[_Lead, ...]) -> tuple[_Lead, ...]:
    """The leads of ``chain`` that the chunk has not opened yet."""
    shared = 0
    while shared < min(len(active), len(chain)) and active[shared] is chain[shared]:
        shared += 1
    return chain[shared:]


def _opened(leads: Sequence[_Lead], units: list[_Unit]) -> list[_Unit]:
    """``units`` preceded by ``leads``: the first lead takes the first unit's separator, and
    each lead's joiner goes before what follows it."""
    if not leads:
        return units
    opened: list[_Unit] = []
    sep = units[0].sep
    for lead in leads:
        opened.append(_Unit(lead.text, lead.tokens, sep, lead, heads=True))
        sep = lead.joiner
    first = units[0]
    opened.append(_Unit(first.text, first.tokens, sep, first.lead, first.row))
    return opened + units[1:]


def _same_group(units: list[_Unit], lead: _Lead | None) -> list[_Unit]:
    """The trailing units of ``units`` read under exactly ``lead`` (no lead text)."""
    start = len(units)
    while start > 0 and units[start - 1].lead is lead and not units[start - 1].heads:
        start -= 1
    return units[start:]


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
    last = previous[-1]
    if last.row:
        return []  # the end of a row, cut from its first cells, would read as a row of its own
    # Even the last sentence is longer than the budget: repeat its final tokens instead.
    tail = _tail(last.text, budget)[-char_budget:].strip()
    return [_Unit(tail, count_tokens(tail), "", last.lead)] if tail else []


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
