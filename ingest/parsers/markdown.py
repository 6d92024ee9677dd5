"""Markdown: a small line-based reader that keeps the structure chunking needs.

It is deliberately not a full CommonMark renderer: it recognises ATX and setext headings,
fenced and indented code, pipe tables, lists, block quotes, front matter and HTML comments,
and strips inline markup so the indexed text reads like the rendered page.

Every pattern here runs in time linear in its line, however long the line and whatever it
holds: a one-line 19 MB file full of unclosed ``*``, ``[`` or backticks must not make a regex
rescan the rest of the line from each of them (see ``_Rule``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ingest.parsers.base import MEDIA_MARKDOWN, Block, BlockKind, ParsedDocument, ParseOptions
from ingest.parsers.text import check_char_limit, decode_text, normalize_text

# The opening hashes only: the closing sequence is trimmed in code, because a lazy ``(.*?)``
# before an optional ``[ \t]+#+`` retries that tail from every character (quadratic in a
# long run of spaces).
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+|$)")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_THEMATIC = re.compile(r"^ {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_TABLE_DELIMITER = re.compile(r"^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?")
_INDENTED = re.compile(r"^(?: {4}|\t)")
_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*\S+")
_FRONT_MATTER_END = re.compile(r"^(?:---|\.\.\.)[ \t]*$")
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*(.*)$", re.IGNORECASE)
_FRONT_MATTER_MAX_LINES = 200

_BACKTICKS = re.compile(r"`+")


class _Rule(NamedTuple):
    """One inline-markup rewrite.

    ``closer``, for emphasis, finds the end of the *last* closing delimiter of a line (a
    greedy ``.*`` backtracks from the end, so one linear scan). A lazy ``(.+?)`` stops at the
    first closer after its opener, so every opener before that last closer matches, and one
    after it never can: the rule is applied only up to there. Without the cut, each unclosed
    opener ("*a *a *a ...") would rescan the rest of the line. Bracket classes exclude the
    brackets that start another attempt, for the same reason.
    """

    pattern: re.Pattern[str]
    replacement: str
    closer: re.Pattern[str] | None = None

    def apply(self, text: str) -> str:
        if self.closer is None:
            return self.pattern.sub(self.replacement, text)
        last = self.closer.match(text)
        if last is None:
            return text
        end = last.end()
        return self.pattern.sub(self.replacement, text[:end]) + text[end:]


def _emphasis(delimiter: str, opener_guard: str, closer_guard: str) -> _Rule:
    d = re.escape(delimiter)
    closer = rf"(?<=\S){d}{closer_guard}"
    return _Rule(
        re.compile(rf"{opener_guard}{d}(?=\S)(.+?){closer}"),
        r"\1",
        re.compile(rf"(?s:.*){closer}"),
    )


_INLINE_RULES: tuple[_Rule, ...] = (
    _Rule(re.compile(r"!\[([^\[\]]*)\]\([^)\[\]]*\)"), r"\1"),  # image -> alt text
    _Rule(re.compile(r"\[([^\[\]]+)\]\([^)\[\]]*\)"), r"\1"),  # inline link -> label
    _Rule(re.compile(r"\[([^\[\]]+)\]\[[^\[\]]*\]"), r"\1"),  # reference link -> label
    _Rule(re.compile(r"<((?:https?|mailto):[^<>\s]+)>"), r"\1"),  # autolink
    _emphasis("**", "", ""),
    _emphasis("__", "", ""),
    _emphasis("*", r"(?<![\w*])", r"(?![\w*])"),
    _emphasis("_", r"(?<!\w)", r"(?!\w)"),
    _emphasis("~~", "", ""),
    _Rule(re.compile(r"\\([!-/:-@\[-`{-~])"), r"\1"),  # backslash escapes
)


def parse_markdown(data: bytes, limits: ParseOptions) -> ParsedDocument:
    """Parse Markdown bytes (any supported text encoding)."""
    return parse_markdown_text(decode_text(data), limits)


def parse_markdown_text(text: str, limits: ParseOptions) -> ParsedDocument:
    """Parse decoded Markdown into heading, paragraph, list, code and table blocks."""
    check_char_limit(len(text), limits)
    reader = _MarkdownReader(normalize_text(text).split("\n"))
    reader.run()
    return ParsedDocument(media_type=MEDIA_MARKDOWN, blocks=reader.blocks, title=reader.title)


def strip_inline_markup(text: str) -> str:
    """Remove emphasis, link and code-span syntax, keeping the words a reader sees."""
    parts: list[str] = []
    position = 0
    for start, end, inner_start, inner_end in _code_spans(text):
        parts.append(_strip_outside_code(text[position:start]))
        inner = text[inner_start:inner_end]
        parts.append(inner.strip() or inner)
        position = end
    parts.append(_strip_outside_code(text[position:]))
    return "".join(parts)


def _code_spans(text: str) -> list[tuple[int, int, int, int]]:
    """``(start, end, inner_start, inner_end)`` of each code span, as CommonMark pairs them:
    a run of backticks opens a span that the next run of the same length closes; a run with
    no such partner is literal. One pass, where a backreference regex retried every unpaired
    run against the rest of the text."""
    runs = [match.span() for match in _BACKTICKS.finditer(text)]
    partner: list[int | None] = [None] * len(runs)
    next_of_length: dict[int, int] = {}
    for index in range(len(runs) - 1, -1, -1):
        length = runs[index][1] - runs[index][0]
        partner[index] = next_of_length.get(length)
        next_of_length[length] = index
    spans: list[tuple[int, int, int, int]] = []
    index = 0
    while index < len(runs):
        closing = partner[index]
        if closing is None:
            index += 1
            continue
        spans.append((runs[index][0], runs[closing][1], runs[index][1], runs[closing][0]))
        index = closing + 1
    return spans


def _strip_outside_code(text: str) -> str:
    # Line by line: emphasis never spans lines (``.`` stops at one), and ``_Rule`` relies on it.
    lines = text.split("\n")
    for rule in _INLINE_RULES:
        lines = [rule.apply(line) for line in lines]
    return "\n".join(lines)


class _MarkdownReader:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.index = 0
        self.blocks: list[Block] = []
        self.title: str | None = None
        self._headings: list[tuple[int, str]] = []
        self._paragraph: list[str] = []
        self._paragraph_kind: BlockKind = "paragraph"
        self._last_kind: BlockKind | None = None

    @property
    def heading_path(self) -> tuple[str, ...]:
        return tuple(text for _, text in self._headings)

    def run(self) -> None:
        self._skip_front_matter()
        while self.index < len(self.lines):
            self._step(self.lines[self.index])
        self._flush()  # a last paragraph with no newline after it

    def _step(self, line: str) -> None:
        fence = _FENCE_OPEN.match(line)
        if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
            self._flush()
            self._read_fenced_code(fence.group(1))
            return
        if line.lstrip().startswith("<!--"):
            self._flush()
            self._skip_comment()
            return
        if not line.strip():
            self._flush()
            self.index += 1
            return
        atx = _ATX.match(line)
        if atx:
            self._flush()
            self._heading(len(atx.group(1)), _atx_content(line[atx.end() :]))
            self.index += 1
            return
        setext = _SETEXT.match(line)
        if setext and self._paragraph and self._paragraph_kind == "paragraph":
            text = " ".join(part.strip() for part in self._paragraph)
            self._paragraph = []
            self._heading(1 if setext.group(1)[0] == "=" else 2, text)
            self.index += 1
            return
        if _THEMATIC.match(line) or _LINK_DEFINITION.match(line):
            self._flush()
            self.index += 1
            return
        if "|" in line and self._is_table_start():
            self._flush()
            self._read_table()
            return
        if _LIST_ITEM.match(line):
            if self._paragraph and self._paragraph_kind != "list":
                self._flush()
            self._paragraph_kind = "list"
            self._paragraph.append(line.strip())
            self.index += 1
            return
        if _INDENTED.match(line) and not self._paragraph and self._last_kind != "list":
            self._read_indented_code()
            return
        if not self._paragraph and self._last_kind == "list" and line[:1] in (" ", "\t"):
            # An indented paragraph after a blank line continues a loose list item.
            self._paragraph_kind = "list"
        quote = _QUOTE.match(line)
        self._paragraph.append(line[quote.end() :] if quote else line.strip())
        self.index += 1

    def _flush(self) -> None:
        if self._paragraph:
            lines = [strip_inline_markup(part).strip() for part in self._paragraph]
            text = "\n".join(part for part in lines if part)
            self._emit(text, self._paragraph_kind)
        self._paragraph = []
        self._paragraph_kind = "paragraph"

    def _emit(self, text: str, kind: BlockKind, *, table_header: bool = False) -> None:
        if text.strip():
            self.blocks.append(Block(text, self.heading_path, kind, table_header))
            self._last_kind = kind

    def _heading(self, level: int, raw_text: str) -> None:
        text = " ".join(strip_inline_markup(raw_text).split())
        if not text:
            return
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))
        self._emit(text, "heading")
        if level == 1 and self.title is None:
            self.title = text

    def _read_fenced_code(self, opener: str) -> None:
        closer = re.compile(rf"^ {{0,3}}{re.escape(opener[0])}{{{len(opener)},}}[ \t]*$")
        self.index += 1
        body: list[str] = []
        # An unclosed fence runs to the end of the document, as in CommonMark.
        while self.index < len(self.lines) and not closer.match(self.lines[self.index]):
            body.append(self.lines[self.index])
            self.index += 1
        self.index += 1
        self._emit("\n".join(body).strip("\n"), "code")

    def _read_indented_code(self) -> None:
        body: list[str] = []
        while self.index < len(self.lines):
            line = self.lines[self.index]
            if line.strip() and not _INDENTED.match(line):
                break
            body.append(line[4:] if line.startswith("    ") else line.lstrip("\t"))
            self.index += 1
        self._emit("\n".join(body).strip("\n"), "code")

    def _skip_comment(self) -> None:
        while self.index < len(self.lines):
            line = self.lines[self.index]
            self.index += 1
            if "-->" in line:
                return

    def _is_table_start(self) -> bool:
        following = self.index + 1
        if following >= len(self.lines):
            return False
        delimiter = self.lines[following]
        return "|" in delimiter and bool(_TABLE_DELIMITER.match(delimiter))

    def _read_table(self) -> None:
        rows = [self.lines[self.index]]
        self.index += 2  # header and delimiter row
        while self.index < len(self.lines):
            line = self.lines[self.index]
            if not line.strip() or "|" not in line:
                break
            rows.append(line)
            self.index += 1
        # The row above the delimiter is the header (a header of empty cells emits nothing,
        # and the table is then one without a header).
        self._emit(_table_row_text(rows[0]), "table", table_header=True)
        for row in rows[1:]:
            self._emit(_table_row_text(row), "table")

    def _skip_front_matter(self) -> None:
        if not self.lines or self.lines[0].rstrip() != "---":
            return
        limit = min(len(self.lines), _FRONT_MATTER_MAX_LINES)
        for end in range(1, limit):
            if _FRONT_MATTER_END.match(self.lines[end]):
                for line in self.lines[1:end]:
                    title = _FRONT_MATTER_TITLE.match(line)
                    if title:
                        self.title = title.group(1).rstrip(" \t").strip("\"'") or None
                self.index = end + 1
                return


def _atx_content(rest: str) -> str:
    """An ATX heading's text: ``rest`` without the optional closing run of ``#``."""
    text = rest.rstrip(" \t")
    without_closer = text.rstrip("#")
    if without_closer != text and (not without_closer or without_closer[-1] in " \t"):
        return without_closer.rstrip(" \t")
    return text


def _table_row_text(row: str) -> str:
    row = row.strip()
    row = row.removeprefix("|")
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    cells = [strip_inline_markup(cell).strip() for cell in re.split(r"(?<!\\)\|", row)]
    return " | ".join(cell.replace("\\|", "|") for cell in cells if cell)
