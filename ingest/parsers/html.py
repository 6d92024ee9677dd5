"""HTML: the text a visitor sees, split into blocks under the h1-h6 outline."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser, LexborNode

from ingest.parsers.base import MEDIA_HTML, Block, BlockKind, ParsedDocument, ParseOptions
from ingest.parsers.text import check_char_limit, decode_text, normalize_text

# Never rendered as text (or rendered as something other than document text).
_DROPPED = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "head",
        "svg",
        "math",
        "iframe",
        "object",
        "embed",
        "canvas",
        "audio",
        "video",
        "select",
        "datalist",
    }
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
# Elements whose start and end separate blocks of text.
_BLOCK_ELEMENTS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "caption",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hgroup",
        "hr",
        "legend",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
        *_HEADINGS,
    }
)
_KIND_OF: dict[str, BlockKind] = {
    "li": "list",
    "dd": "list",
    "dt": "list",
    "pre": "code",
    "td": "table",
    "th": "table",
    "tr": "table",
    "caption": "table",
}
_TABLE_STRUCTURE = frozenset({"table", "tr"})
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_CELL_BREAK = "\x1f"  # marks a cell boundary inside a table-row buffer
_LINE_BREAK = "\x1e"  # marks <br> so whitespace collapsing keeps it
_WHITESPACE = re.compile(r"\s+")


def parse_html(data: bytes, limits: ParseOptions) -> ParsedDocument:
    """Parse HTML bytes (any supported text encoding)."""
    return parse_html_text(decode_text(data), limits)


def parse_html_text(text: str, limits: ParseOptions) -> ParsedDocument:
    """Parse decoded HTML into blocks of visible text; the <title> becomes the document title."""
    tree = LexborHTMLParser(text)
    title = None
    if tree.head is not None:
        title_node = tree.head.css_first("title")
        if title_node is not None:
            title = _collapse(title_node.text(deep=True)) or None
    root = tree.body if tree.body is not None else tree.root
    walker = _Walker()
    if root is not None:
        walker.walk(root)
    blocks = walker.blocks
    check_char_limit(sum(len(block.text) for block in blocks), limits)
    if title is None:
        title = walker.first_h1
    return ParsedDocument(media_type=MEDIA_HTML, blocks=blocks, title=title)


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", normalize_text(text)).strip()


def _is_hidden(node: LexborNode) -> bool:
    attributes = node.attributes
    if "hidden" in attributes:
        return True
    if (attributes.get("aria-hidden") or "").strip().lower() == "true":
        return True
    if node.tag == "input" and (attributes.get("type") or "").lower() == "hidden":
        return True
    style = attributes.get("style")
    return bool(style and _HIDDEN_STYLE.search(style))


@dataclass
class _Walker:
    blocks: list[Block] = field(default_factory=list)
    _buffer: list[str] = field(default_factory=list)
    # Enclosing elements that decide a block's kind, and enclosing tr/table elements,
    # innermost last. A DOM walk leaves elements in LIFO order, so pops always match.
    _kind_tags: list[str] = field(default_factory=list)
    _table_tags: list[str] = field(default_factory=list)
    # Rows emitted so far by each enclosing table, innermost last: its first row is its header.
    _table_rows: list[int] = field(default_factory=list)
    _headings: list[tuple[int, str]] = field(default_factory=list)
    _pre_depth: int = 0
    first_h1: str | None = None

    def walk(self, root: LexborNode) -> None:
        # Iterative, so deeply nested markup cannot exhaust the Python stack.
        stack: list[tuple[LexborNode, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                self._leave(node.tag or "")
                continue
            if node.is_text_node:
                self._text(node.text_content or "")
                continue
            if not node.is_element_node:
                continue
            tag = node.tag or ""
            if tag in _DROPPED or _is_hidden(node):
                continue
            self._enter(tag)
            stack.append((node, True))
            children = list(node.iter(include_text=True))
            stack.extend((child, False) for child in reversed(children))
        self._flush()

    def _in_row(self) -> bool:
        return bool(self._table_tags) and self._table_tags[-1] == "tr"

    def _text(self, text: str) -> None:
        self._buffer.append(text)

    def _enter(self, tag: str) -> None:
        if tag == "br":
            self._buffer.append(_LINE_BREAK)
        elif tag in ("td", "th") and self._in_row():
            self._buffer.append(_CELL_BREAK)
        elif tag in _BLOCK_ELEMENTS:
            if self._in_row() and tag not in ("table", *_HEADINGS):
                # Paragraphs inside a cell stay in the cell: a row is one block.
                self._buffer.append(" ")
            else:
                self._flush()
        if tag in _KIND_OF:
            self._kind_tags.append(tag)
        if tag in _TABLE_STRUCTURE:
            self._table_tags.append(tag)
        if tag == "table":
            self._table_rows.append(0)
        if tag == "pre":
            self._pre_depth += 1

    def _leave(self, tag: str) -> None:
        if tag not in _BLOCK_ELEMENTS:
            return
        if tag in _HEADINGS:
            self._heading(_HEADINGS[tag], _collapse(self._take_buffer().replace(_LINE_BREAK, " ")))
        elif tag == "tr" or not self._in_row() or tag == "table":
            self._flush(row=tag == "tr")
        else:
            self._buffer.append(" ")
        if tag in _KIND_OF and self._kind_tags:
            self._kind_tags.pop()
        if tag in _TABLE_STRUCTURE and self._table_tags:
            self._table_tags.pop()
        if tag == "table" and self._table_rows:
            self._table_rows.pop()
        if tag == "pre":
            self._pre_depth -= 1

    def _take_buffer(self) -> str:
        text = "".join(self._buffer)
        self._buffer = []
        return text

    def _kind(self) -> BlockKind:
        return _KIND_OF[self._kind_tags[-1]] if self._kind_tags else "paragraph"

    def _flush(self, *, row: bool = False) -> None:
        raw = self._take_buffer()
        if not raw.strip():
            return
        kind = self._kind()
        if kind == "code" and self._pre_depth > 0:
            text = normalize_text(raw.replace(_LINE_BREAK, "\n")).strip("\n")
            text = "\n".join(line.rstrip() for line in text.split("\n"))
        elif _CELL_BREAK in raw:
            cells = (_collapse(cell.replace(_LINE_BREAK, " ")) for cell in raw.split(_CELL_BREAK))
            text = " | ".join(cell for cell in cells if cell)
        else:
            lines = (_collapse(line) for line in raw.split(_LINE_BREAK))
            text = "\n".join(line for line in lines if line)
        if not text:
            return
        # The first row of a table, <th> cells or not, is its header ("/first row" tables
        # without <th> are as common as those with it).
        header = False
        if row and kind == "table" and self._table_rows:
            header = self._table_rows[-1] == 0
            self._table_rows[-1] += 1
        self.blocks.append(Block(text, self._path(), kind, header))

    def _path(self) -> tuple[str, ...]:
        return tuple(text for _, text in self._headings)

    def _heading(self, level: int, text: str) -> None:
        if not text:
            return
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))
        self.blocks.append(Block(text, self._path(), "heading"))
        if level == 1 and self.first_h1 is None:
            self.first_h1 = text
