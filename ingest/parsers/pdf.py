"""PDF via pypdf: text per page, split into paragraphs where the extraction shows blank lines.

Blocks carry an empty heading_path: PDFs have no reliable heading markup, and an empty path
lets the chunker pack text across page breaks (paragraphs often straddle them). The page
count is reported on the ParsedDocument instead.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from pypdf import Configuration, PasswordType, PdfReader, apply_configuration
from pypdf.errors import DependencyError, DeprecationError, LimitReachedError, PyPdfError

from ingest.parsers.base import (
    MEDIA_PDF,
    Block,
    DecompressionLimitExceeded,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    MalformedDocument,
    ParsedDocument,
    ParseOptions,
)
from ingest.parsers.text import check_char_limit, normalize_text, split_paragraphs

# What pypdf lets escape on broken files besides its own error classes (observed by fuzzing
# mutated PDFs): malformed object graphs surface as type/attribute/lookup errors, broken
# streams as zlib/struct errors, self-referencing trees as RecursionError.
_BROKEN_PDF_ERRORS: tuple[type[BaseException], ...] = (
    PyPdfError,
    DeprecationError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    AssertionError,
    ArithmeticError,
    RecursionError,
    NotImplementedError,
    EOFError,
    zlib.error,
    struct.error,
)

_MALFORMED = "The PDF is damaged or not a valid PDF file."
_BOMB = "The PDF contains data that expands beyond the server's safety limits."


def parse_pdf(data: bytes, limits: ParseOptions) -> ParsedDocument:
    """Extract the text of a PDF page by page; see the module docstring for the block layout."""
    with _bounded_decoding(limits):
        reader = _open(data)
        page_count = _page_count(reader, limits)
        title = _title(reader)
        page_texts = _page_texts(reader, limits)

    blocks = [
        Block(paragraph, (), "paragraph")
        for text in page_texts
        for paragraph in split_paragraphs(text)
    ]
    if not blocks:
        raise EmptyDocument(
            "The PDF contains no extractable text. It may be a scanned image; OCR is not supported."
        )
    return ParsedDocument(media_type=MEDIA_PDF, blocks=blocks, title=title, page_count=page_count)


@contextmanager
def _bounded_decoding(limits: ParseOptions) -> Iterator[Configuration]:
    # pypdf caps every stream filter's output; lower those caps to our budget. The caps are
    # per stream, so the page limit and max_chars are what bound the document as a whole.
    default = Configuration()
    cap = limits.max_decompressed_bytes
    with apply_configuration(
        zlib_maximum_output_length=min(default.zlib_maximum_output_length, cap),
        lzw_maximum_output_length=min(default.lzw_maximum_output_length, cap),
        run_length_maximum_output_length=min(default.run_length_maximum_output_length, cap),
        brotli_maximum_output_length=min(default.brotli_maximum_output_length, cap),
        jbig2_maximum_output_length=min(default.jbig2_maximum_output_length, cap),
        array_based_stream_maximum_output_length=min(
            default.array_based_stream_maximum_output_length, cap
        ),
        maximum_declared_stream_length=min(default.maximum_declared_stream_length, cap),
    ) as configuration:
        yield configuration


def _open(data: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except NotImplementedError as exc:
        # pypdf raises this while reading the /Encrypt dictionary of non-standard handlers.
        if b"/Encrypt" in data:
            raise EncryptedDocument(
                "The PDF uses an encryption method the server cannot open."
            ) from exc
        raise MalformedDocument(_MALFORMED) from exc
    except LimitReachedError as exc:
        raise DecompressionLimitExceeded(_BOMB) from exc
    except _BROKEN_PDF_ERRORS as exc:
        raise MalformedDocument(_MALFORMED) from exc
    if not encrypted:
        return reader
    # Many PDFs are "encrypted" only to restrict printing or copying: they open with an
    # empty user password, and their text is fair game for the owner who uploaded them.
    try:
        result = reader.decrypt("")
    except (DependencyError, NotImplementedError) as exc:
        raise EncryptedDocument(
            "The PDF uses an encryption method the server cannot open."
        ) from exc
    except _BROKEN_PDF_ERRORS as exc:
        raise MalformedDocument(_MALFORMED) from exc
    if result == PasswordType.NOT_DECRYPTED:
        raise EncryptedDocument(
            "The PDF is password-protected. Remove the password and upload it again."
        )
    return reader


def _page_count(reader: PdfReader, limits: ParseOptions) -> int:
    try:
        count = len(reader.pages)
    except LimitReachedError as exc:
        raise DocumentTooLarge("The PDF's page tree is larger than the server allows.") from exc
    except _BROKEN_PDF_ERRORS as exc:
        raise MalformedDocument(_MALFORMED) from exc
    if count > limits.max_pdf_pages:
        raise DocumentTooLarge(
            f"The PDF has {count:,} pages; the server accepts at most {limits.max_pdf_pages:,}."
        )
    return count


def _title(reader: PdfReader) -> str | None:
    # A broken /Info dictionary costs us the title, not the document.
    try:
        metadata = reader.metadata
        raw = metadata.title if metadata is not None else None
    except _BROKEN_PDF_ERRORS:
        return None
    if not isinstance(raw, str):
        return None
    title = " ".join(normalize_text(raw).split())
    return title or None


def _page_texts(reader: PdfReader, limits: ParseOptions) -> list[str]:
    texts: list[str] = []
    total = 0
    try:
        for page in reader.pages:
            text = page.extract_text()
            total += len(text)
            # Checked per page so a huge document fails before all of it is extracted.
            check_char_limit(total, limits)
            texts.append(text)
    except LimitReachedError as exc:
        raise DecompressionLimitExceeded(_BOMB) from exc
    except _BROKEN_PDF_ERRORS + (DependencyError,) as exc:
        raise MalformedDocument(_MALFORMED) from exc
    return texts
