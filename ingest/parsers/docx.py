"""Word (.docx) via python-docx, after the archive has been checked for zip bombs."""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib

import docx
from docx.document import Document as DocxDocument
from docx.opc.exceptions import OpcError
from docx.table import Table
from docx.text.paragraph import Paragraph
from lxml.etree import LxmlError

from ingest.parsers.base import (
    MEDIA_DOCX,
    Block,
    BlockKind,
    DecompressionLimitExceeded,
    EncryptedDocument,
    MalformedDocument,
    ParsedDocument,
    ParseOptions,
)
from ingest.parsers.text import check_char_limit, normalize_text

MAIN_PART = "word/document.xml"
# Small parts (styles, settings) can compress very well; the ratio rule only starts to
# apply once an entry is big enough to matter for memory.
RATIO_GRACE_BYTES = 1024 * 1024
_READ_CHUNK = 64 * 1024

_HEADING_STYLE = re.compile(r"^heading ([1-9])$", re.IGNORECASE)
_TITLE_LEVEL = 0  # "Title" sits above Heading 1 in the outline

_MALFORMED = "The Word document is damaged or not a valid .docx file."
_ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,  # an unsupported compression method
)
# python-docx reports a broken package (bad relationships, content types, XML) through
# these while opening it; AttributeError and TypeError come from missing attributes it
# does not validate (seen by fuzzing). They are caught around the open only, so a bug in
# our own traversal still surfaces as one.
_DOCX_OPEN_ERRORS: tuple[type[BaseException], ...] = (
    OpcError,
    LxmlError,
    KeyError,
    AttributeError,
    TypeError,
    *_ARCHIVE_ERRORS,
)
# Reading paragraphs and tables of a package that opened: broken values inside the XML.
_DOCX_READ_ERRORS: tuple[type[BaseException], ...] = (LxmlError, KeyError, ValueError)


def check_archive(data: bytes, limits: ParseOptions) -> None:
    """Reject archives whose entry count, expanded size or compression ratio exceed the limits.

    Declared sizes come from the central directory, which an attacker controls, so every
    entry is also inflated through a bounded reader and the real byte counts are checked.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            _check_declared(infos, limits)
            if MAIN_PART not in {info.filename for info in infos}:
                raise MalformedDocument(
                    "The file is a ZIP archive but not a Word document (no main document part)."
                )
            total = 0
            for info in infos:
                total = _inflate_bounded(archive, info, total, limits)
    except _ARCHIVE_ERRORS as exc:
        raise MalformedDocument(_MALFORMED) from exc


def parse_docx(data: bytes, limits: ParseOptions) -> ParsedDocument:
    """Parse a .docx into heading, paragraph, list and table blocks."""
    check_archive(data, limits)
    try:
        document = docx.Document(io.BytesIO(data))
    except _DOCX_OPEN_ERRORS as exc:
        raise MalformedDocument(_MALFORMED) from exc
    reader = _DocxReader(limits)
    try:
        reader.read(document)
    except _DOCX_READ_ERRORS as exc:
        raise MalformedDocument(_MALFORMED) from exc
    title = reader.title_paragraph or _core_title(document) or reader.first_heading
    return ParsedDocument(media_type=MEDIA_DOCX, blocks=reader.blocks, title=title or None)


def _bomb(reason: str) -> DecompressionLimitExceeded:
    return DecompressionLimitExceeded(
        f"The Word document was rejected as a possible zip bomb: {reason}."
    )


def _ratio_exceeded(size: int, compressed: int, limits: ParseOptions) -> bool:
    return size > RATIO_GRACE_BYTES and size > limits.max_compression_ratio * max(compressed, 1)


def _check_declared(infos: list[zipfile.ZipInfo], limits: ParseOptions) -> None:
    if len(infos) > limits.max_zip_entries:
        raise _bomb(f"it has more than {limits.max_zip_entries:,} parts")
    if sum(info.file_size for info in infos) > limits.max_decompressed_bytes:
        raise _bomb("its contents expand beyond the allowed size")
    for info in infos:
        if _ratio_exceeded(info.file_size, info.compress_size, limits):
            raise _bomb("a part is compressed far more than real documents are")


def _inflate_bounded(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, total: int, limits: ParseOptions
) -> int:
    if info.is_dir():
        return total
    if info.flag_bits & 0x1:
        raise EncryptedDocument("The Word document is password-protected.")
    produced = 0
    with archive.open(info) as entry:
        while chunk := entry.read(_READ_CHUNK):
            produced += len(chunk)
            total += len(chunk)
            if produced > info.file_size:
                raise _bomb("a part is larger than the archive declares")
            if total > limits.max_decompressed_bytes:
                raise _bomb("its contents expand beyond the allowed size")
            if _ratio_exceeded(produced, info.compress_size, limits):
                raise _bomb("a part is compressed far more than real documents are")
    return total


def _core_title(document: DocxDocument) -> str | None:
    # A broken docProps/core.xml costs the title, not the document; python-docx reports an
    # unrecognised root element as AttributeError.
    try:
        raw = document.core_properties.title
    except (AttributeError, LxmlError, KeyError, ValueError):
        return None
    return _clean(raw or "") or None


def _clean(text: str) -> str:
    return " ".join(normalize_text(text).split())


class _DocxReader:
    def __init__(self, limits: ParseOptions) -> None:
        self.limits = limits
        self.blocks: list[Block] = []
        self.title_paragraph: str | None = None
        self.first_heading: str | None = None
        self._headings: list[tuple[int, str]] = []
        self._chars = 0

    def read(self, document: DocxDocument) -> None:
        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                self._paragraph(item)
            elif isinstance(item, Table):
                self._table(item)

    def _path(self) -> tuple[str, ...]:
        return tuple(text for _, text in self._headings)

    def _emit(self, text: str, kind: BlockKind, *, table_header: bool = False) -> None:
        self._chars += len(text)
        check_char_limit(self._chars, self.limits)
        self.blocks.append(Block(text, self._path(), kind, table_header))

    def _paragraph(self, paragraph: Paragraph) -> None:
        style_name = _style_name(paragraph)
        level = _heading_level(style_name)
        if level is not None:
            text = _clean(paragraph.text)
            if text:
                self._heading(level, text)
            return
        text = "\n".join(line.strip() for line in normalize_text(paragraph.text).split("\n"))
        text = text.strip()
        if not text:
            return
        properties = paragraph._p.pPr
        numbered = properties is not None and properties.numPr is not None
        self._emit(text, "list" if numbered or style_name.startswith("List") else "paragraph")

    def _heading(self, level: int, text: str) -> None:
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))
        self._emit(text, "heading")
        if level == _TITLE_LEVEL and self.title_paragraph is None:
            self.title_paragraph = text
        elif level == 1 and self.first_heading is None:
            self.first_heading = text

    def _table(self, table: Table) -> None:
        # Word has no required header row: the first row with text is taken as the header
        # (what "Repeat as header row" marks in practice, and what a reader assumes).
        header = True
        for row in table.rows:
            cells: list[str] = []
            previous = None
            for cell in row.cells:
                # A horizontally merged cell is returned once per grid column it spans.
                if previous is not None and cell._tc is previous:
                    continue
                previous = cell._tc
                text = _clean(cell.text)
                if text:
                    cells.append(text)
            if cells:
                self._emit(" | ".join(cells), "table", table_header=header)
                header = False


def _style_name(paragraph: Paragraph) -> str:
    # A damaged styles part (python-docx then raises AttributeError) only costs us the
    # heading structure: the paragraph is still read as body text.
    try:
        style = paragraph.style
    except (AttributeError, LxmlError, KeyError, ValueError):
        return ""
    return (style.name or "") if style is not None else ""


def _heading_level(style_name: str) -> int | None:
    if style_name == "Title":
        return _TITLE_LEVEL
    match = _HEADING_STYLE.match(style_name)
    return int(match.group(1)) if match else None
