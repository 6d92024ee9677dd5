"""Decide a document's format from its bytes; the filename only separates Markdown from text."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from ingest.parsers.base import (
    MEDIA_DOCX,
    MEDIA_HTML,
    MEDIA_MARKDOWN,
    MEDIA_PDF,
    MEDIA_PLAIN,
    UnsupportedType,
)
from ingest.parsers.text import decode_text

_SUPPORTED = "Upload PDF, Word (.docx), HTML, Markdown or plain text."

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
# Only formats people plausibly upload by mistake; anything else binary is caught by decoding.
_BINARY_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x7fELF", "an executable program"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy or password-protected Office file"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"{\\rtf", "an RTF document"),
)
_OTHER_OFFICE_PARTS: tuple[tuple[str, str], ...] = (
    ("xl/workbook.xml", "an Excel workbook"),
    ("ppt/presentation.xml", "a PowerPoint presentation"),
    ("content.xml", "an OpenDocument file"),
)

# The leading tags of the WHATWG MIME sniffing standard (section 7.1), so HTML fragments
# ("<p>...", "<div>...") are read as HTML rather than indexed with their markup.
_HTML_START = re.compile(
    r"(?:\s|<!--.*?-->|<\?xml[^>]*>)*<(?:!doctype\s+html|html|head|body|script|iframe|h[1-6]"
    r"|div|font|table|a|style|title|b|br|p|section|article|main|ul|ol|meta)[\s>/]",
    re.IGNORECASE | re.DOTALL,
)
_HTML_SNIFF_CHARS = 4096
_MARKDOWN_HINT = re.compile(r"^(?: {0,3}#{1,6}[ \t]+\S| {0,3}```)", re.MULTILINE)
_MARKDOWN_SNIFF_CHARS = 65536
_MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
_PLAIN_SUFFIXES = frozenset({".txt", ".text"})


@dataclass(frozen=True, slots=True)
class Sniffed:
    """The detected media type, plus the decoded text for text formats so nobody decodes twice."""

    media_type: str
    text: str | None = None


def sniff_media_type(data: bytes, filename: str | None) -> str:
    """Return the media type of ``data`` or raise UnsupportedType; content decides, not the name."""
    return sniff(data, filename).media_type


def sniff(data: bytes, filename: str | None) -> Sniffed:
    """Like ``sniff_media_type`` but also hand back the decoded text of text formats."""
    head = data[:1024]
    if head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"%PDF-"):
        return Sniffed(MEDIA_PDF)
    if head.startswith(_ZIP_MAGICS):
        return Sniffed(_sniff_zip(data))
    for magic, description in _BINARY_MAGICS:
        if head.startswith(magic):
            raise UnsupportedType(
                f"This file is {description}, which is not supported. {_SUPPORTED}"
            )

    try:
        text = decode_text(data)
    except UnsupportedType as exc:
        raise UnsupportedType(
            f"This file type is not supported (it is not a document or text file). {_SUPPORTED}"
        ) from exc
    if _HTML_START.match(text, 0, _HTML_SNIFF_CHARS):
        return Sniffed(MEDIA_HTML, text)
    return Sniffed(_markdown_or_plain(text, filename), text)


def _sniff_zip(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    # NotImplementedError: a central directory that claims an unsupported zip version.
    except (
        zipfile.BadZipFile,
        ValueError,
        OSError,
        EOFError,
        struct.error,
        NotImplementedError,
    ) as exc:
        # A damaged archive whose local headers still name the Word main part is a broken
        # DOCX: the parser then says "damaged", which helps the user more than "unsupported".
        if b"word/document.xml" in data:
            return MEDIA_DOCX
        raise UnsupportedType(f"This file is a damaged or unknown archive. {_SUPPORTED}") from exc
    if "word/document.xml" in names:
        return MEDIA_DOCX
    for part, description in _OTHER_OFFICE_PARTS:
        if part in names:
            raise UnsupportedType(
                f"This file is {description}, which is not supported. {_SUPPORTED}"
            )
    raise UnsupportedType(f"ZIP archives are not supported. {_SUPPORTED}")


def _markdown_or_plain(text: str, filename: str | None) -> str:
    if filename:
        suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
        if suffix in _MARKDOWN_SUFFIXES:
            return MEDIA_MARKDOWN
        if suffix in _PLAIN_SUFFIXES:
            return MEDIA_PLAIN
    if _MARKDOWN_HINT.search(text, 0, _MARKDOWN_SNIFF_CHARS):
        return MEDIA_MARKDOWN
    return MEDIA_PLAIN
