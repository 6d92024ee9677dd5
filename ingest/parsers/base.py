"""Types shared by every parser: the parsed document, the safety limits and the errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

BlockKind = Literal["heading", "paragraph", "list", "code", "table"]

MEDIA_PDF = "application/pdf"
MEDIA_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MEDIA_HTML = "text/html"
MEDIA_MARKDOWN = "text/markdown"
MEDIA_PLAIN = "text/plain"


@dataclass(frozen=True, slots=True)
class Block:
    """One structural unit of a document, under the headings that enclose it.

    A heading block's own text is the last element of its ``heading_path``. A table is a run
    of consecutive ``table`` blocks, one per row (cells joined by `` | ``); its header row, when
    the format names one, is the first block of the run and has ``table_header`` set, so the
    chunker can repeat it above every row it cuts away from it. A ``table_header`` block starts
    a new table even right after another table's rows. Parsers that know no tables leave it
    unset.
    """

    text: str
    heading_path: tuple[str, ...]
    kind: BlockKind
    table_header: bool = False


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A parser's output: blocks in reading order plus what the format told us about itself."""

    media_type: str
    blocks: list[Block]
    title: str | None = None
    page_count: int | None = None


class ParseOptions(Protocol):
    """Resource ceilings that protect the worker from hostile or absurd uploads (the
    `parse_limits` settings section, app/kit/settings.py ParseLimits)."""

    @property
    def max_decompressed_bytes(self) -> int: ...

    @property
    def max_compression_ratio(self) -> int: ...

    @property
    def max_zip_entries(self) -> int: ...

    @property
    def max_pdf_pages(self) -> int: ...

    @property
    def max_chars(self) -> int: ...


class ParseError(Exception):
    """Base of every parser failure; ``reason`` is safe to show an end user (no file content)."""

    code: ClassVar[str] = "parse_error"
    default_reason: ClassVar[str] = "The document could not be read."

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason if reason is not None else self.default_reason
        super().__init__(self.reason)


class UnsupportedType(ParseError):
    """The content is not one of the formats Cairn can ingest."""

    code = "unsupported_type"
    default_reason = (
        "This file type is not supported. Upload PDF, Word (.docx), HTML, Markdown or plain text."
    )


class EmptyDocument(ParseError):
    """The file is empty or yields no text."""

    code = "empty_document"
    default_reason = "The document is empty or contains no extractable text."


class EncryptedDocument(ParseError):
    """The file is password-protected and cannot be opened without the password."""

    code = "encrypted_document"
    default_reason = "The document is password-protected. Remove the password and upload it again."


class MalformedDocument(ParseError):
    """The file claims a supported format but is damaged or invalid."""

    code = "malformed_document"
    default_reason = "The document is damaged or not a valid file of its type."


class DecompressionLimitExceeded(ParseError):
    """The file expands beyond the configured safety limits (for example a zip bomb)."""

    code = "decompression_limit"
    default_reason = "The document expands to more data than the server allows."


class DocumentTooLarge(ParseError):
    """The document has more pages or text than the configured limits allow."""

    code = "document_too_large"
    default_reason = "The document is larger than the server allows."
