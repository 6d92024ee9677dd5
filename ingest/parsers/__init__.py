"""Document parsers: bytes in, structured blocks out. The format is sniffed from content."""

from __future__ import annotations

from collections.abc import Callable

from ingest.parsers.base import (
    MEDIA_DOCX,
    MEDIA_HTML,
    MEDIA_MARKDOWN,
    MEDIA_PDF,
    MEDIA_PLAIN,
    Block,
    BlockKind,
    DecompressionLimitExceeded,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    MalformedDocument,
    ParsedDocument,
    ParseError,
    ParseOptions,
    UnsupportedType,
)
from ingest.parsers.docx import parse_docx
from ingest.parsers.html import parse_html_text
from ingest.parsers.markdown import parse_markdown_text
from ingest.parsers.pdf import parse_pdf
from ingest.parsers.sniff import sniff, sniff_media_type
from ingest.parsers.text import parse_plain_text

__all__ = [
    "MEDIA_DOCX",
    "MEDIA_HTML",
    "MEDIA_MARKDOWN",
    "MEDIA_PDF",
    "MEDIA_PLAIN",
    "SUPPORTED_MEDIA_TYPES",
    "Block",
    "BlockKind",
    "DecompressionLimitExceeded",
    "DocumentTooLarge",
    "EmptyDocument",
    "EncryptedDocument",
    "MalformedDocument",
    "ParseError",
    "ParseOptions",
    "ParsedDocument",
    "UnsupportedType",
    "parse",
    "sniff_media_type",
]

SUPPORTED_MEDIA_TYPES = (MEDIA_PDF, MEDIA_DOCX, MEDIA_HTML, MEDIA_MARKDOWN, MEDIA_PLAIN)

_BINARY_PARSERS: dict[str, Callable[[bytes, ParseOptions], ParsedDocument]] = {
    MEDIA_PDF: parse_pdf,
    MEDIA_DOCX: parse_docx,
}
_TEXT_PARSERS: dict[str, Callable[[str, ParseOptions], ParsedDocument]] = {
    MEDIA_HTML: parse_html_text,
    MEDIA_MARKDOWN: parse_markdown_text,
    MEDIA_PLAIN: parse_plain_text,
}


def parse(data: bytes, filename: str | None, limits: ParseOptions) -> ParsedDocument:
    """Sniff the format of ``data`` and parse it; every failure is a ParseError subclass."""
    if not data:
        raise EmptyDocument("The file is empty.")
    sniffed = sniff(data, filename)
    if sniffed.text is not None:
        document = _TEXT_PARSERS[sniffed.media_type](sniffed.text, limits)
    else:
        document = _BINARY_PARSERS[sniffed.media_type](data, limits)
    if not any(block.text.strip() for block in document.blocks):
        raise EmptyDocument()
    return document
