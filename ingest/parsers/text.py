"""Plain text: encoding detection shared by every text-based format, and paragraph splitting."""

from __future__ import annotations

import codecs
import re

import charset_normalizer

from ingest.parsers.base import (
    MEDIA_PLAIN,
    Block,
    DocumentTooLarge,
    ParsedDocument,
    ParseOptions,
    UnsupportedType,
)

# UTF-32 first: its little-endian BOM starts with the UTF-16 one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Control characters (category Cc) other than the ones text files legitimately use:
# tab, newlines, vertical tab, form feed and escape.
_BINARY_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
# More than this share of other control characters means we decoded binary data.
_MAX_CONTROL_RATIO = 0.005
_SAMPLE_CHARS = 1 << 20

_NOT_TEXT = "This file is not a text file Cairn can read (binary or unknown encoding)."

_NEWLINES = re.compile(r"\r\n?|[\v\u2028\u0085]")
_PAGE_BREAKS = re.compile(r"[\f\u2029]")
# Format characters that render as nothing: zero-width space, word joiner and the invisible
# math operators, the deprecated shaping controls, the BOM (zero-width no-break space), the
# Mongolian vowel separator, the soft hyphen (it also splits a word for search), the
# interlinear annotation marks, and the TAG block U+E0000-U+E007F, whose characters mirror
# ASCII invisibly: some language models read them, so a document can hide instructions to the
# model in them ("ASCII smuggling"). ZWJ and ZWNJ stay: Persian, Indic scripts and emoji
# sequences need them, and they spell nothing a model reads. Bidi marks stay too: right-to-
# left documents use them.
INVISIBLE_FORMAT_CHARS = (
    "\u00ad\u180e\u200b\u2060-\u2065\u206a-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f"
)
_STRAY_CONTROLS = re.compile(rf"[\x00-\x08\x0e-\x1f\x7f{INVISIBLE_FORMAT_CHARS}]")
_BLANK_LINES = re.compile(r"\n(?:[ \t\xa0]*\n)+")


def decode_text(data: bytes) -> str:
    """Decode bytes to str: BOM, then UTF-8, then detection; raise UnsupportedType for binary."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _checked(_strict_decode(data[len(bom) :], encoding))
    if b"\x00" in data:
        # NUL never occurs in 8-bit or UTF-8 text; it may be BOM-less UTF-16.
        return _checked(_decode_bomless_utf16(data))
    try:
        return _checked(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    return _checked(_detect_and_decode(data))


def normalize_text(text: str) -> str:
    """Unify line endings, turn page breaks into blank lines, drop stray control characters and
    invisible format characters (every parser's text passes through here)."""
    text = _NEWLINES.sub("\n", text)
    text = _PAGE_BREAKS.sub("\n\n", text)
    text = _STRAY_CONTROLS.sub("", text)
    return text.replace("\xa0", " ")


def split_paragraphs(text: str) -> list[str]:
    """Split on blank lines; trailing spaces are trimmed and empty paragraphs dropped."""
    paragraphs = []
    for raw in _BLANK_LINES.split(normalize_text(text)):
        lines = [line.rstrip() for line in raw.strip("\n").split("\n")]
        paragraph = "\n".join(lines).strip()
        if paragraph:
            paragraphs.append(paragraph)
    return paragraphs


def check_char_limit(char_count: int, limits: ParseOptions) -> None:
    """Raise DocumentTooLarge when a document's text exceeds ``limits.max_chars``."""
    if char_count > limits.max_chars:
        raise DocumentTooLarge(
            f"The document contains more than {limits.max_chars:,} characters of text, "
            "which is more than the server allows."
        )


def parse_plain_text(text: str, limits: ParseOptions) -> ParsedDocument:
    """Parse already-decoded plain text into paragraph blocks."""
    check_char_limit(len(text), limits)
    blocks = [Block(p, (), "paragraph") for p in split_paragraphs(text)]
    return ParsedDocument(media_type=MEDIA_PLAIN, blocks=blocks)


def parse_text(data: bytes, limits: ParseOptions) -> ParsedDocument:
    """Parse plain-text bytes of any supported encoding into paragraph blocks."""
    return parse_plain_text(decode_text(data), limits)


def _strict_decode(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UnsupportedType(_NOT_TEXT) from exc


def _decode_bomless_utf16(data: bytes) -> str:
    sample = data[:4096]
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = max(len(sample) // 2, 1)
    # Mostly-ASCII UTF-16 has a NUL in every other byte and almost none in between.
    if odd_nuls / half > 0.3 and even_nuls / half < 0.05:
        return _strict_decode(data, "utf-16-le")
    if even_nuls / half > 0.3 and odd_nuls / half < 0.05:
        return _strict_decode(data, "utf-16-be")
    raise UnsupportedType(_NOT_TEXT)


def _detect_and_decode(data: bytes) -> str:
    matches = charset_normalizer.from_bytes(data)
    best = matches.best()
    if best is None:
        raise UnsupportedType(_NOT_TEXT)
    encoding = best.encoding
    # Short Chinese texts are ambiguous between the CJK legacy encodings and the detector
    # often prefers cp949 or big5; Cairn's users are mostly Chinese, so when GB18030
    # reads the bytes equally cleanly, it wins the tie.
    if encoding != "gb18030":
        for match in matches:
            if match.encoding == "gb18030" and match.percent_chaos <= best.percent_chaos + 0.5:
                encoding = "gb18030"
                break
    return _strict_decode(data, encoding)


def _checked(text: str) -> str:
    sample = text[:_SAMPLE_CHARS]
    if not sample:
        return text
    if len(_BINARY_CONTROLS.findall(sample)) / len(sample) > _MAX_CONTROL_RATIO:
        raise UnsupportedType(_NOT_TEXT)
    return text
