"""Hand-built PDFs for the parser tests, so no binary fixture has to live in the repo."""

from __future__ import annotations

import io
import zlib

from pypdf import PdfReader, PdfWriter

# A paragraph gap is drawn as an empty text line, which pypdf's plain extraction
# reports as a blank line; that is what the parser splits paragraphs on.
PARAGRAPH_BREAK = ""


def _pdf_string(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1") + b")"


def _content_stream(lines: list[str]) -> bytes:
    ops = [b"BT", b"/F1 12 Tf", b"14 TL", b"72 720 Td"]
    for line in lines:
        ops.append(_pdf_string(line) + b" Tj T*")
    ops.append(b"ET")
    return b"\n".join(ops)


def build_pdf(
    pages: list[list[str]],
    *,
    title: str | None = None,
    compress: bool = False,
    padding: bytes = b"",
    trailing_lines: list[str] | None = None,
) -> bytes:
    """A valid PDF with one Helvetica text line per entry; correct xref offsets.

    ``padding`` (whitespace or a ``%`` comment) is inserted into every content stream before
    ``trailing_lines``; with ``compress`` (FlateDecode) a run of spaces makes a small file that
    inflates to a large stream.
    """
    page_count = len(pages)
    font_id = 3
    first_page_id = 4
    info_id = first_page_id + 2 * page_count
    kids = b" ".join(f"{first_page_id + 2 * i} 0 R".encode() for i in range(page_count))

    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(page_count).encode() + b" >>",
        font_id: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for i, lines in enumerate(pages):
        page_id = first_page_id + 2 * i
        content_id = page_id + 1
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents "
            + f"{content_id} 0 R".encode()
            + b" >>"
        )
        stream = _content_stream(lines)
        if padding or trailing_lines:
            stream += b"\n" + padding + b"\n" + _content_stream(trailing_lines or [])
        filter_entry = b""
        if compress:
            stream = zlib.compress(stream, 9)
            filter_entry = b" /Filter /FlateDecode"
        objects[content_id] = (
            b"<< /Length "
            + str(len(stream)).encode()
            + filter_entry
            + b" >>\nstream\n"
            + stream
            + b"\nendstream"
        )
    if title is not None:
        objects[info_id] = b"<< /Title " + _pdf_string(title) + b" >>"

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for obj_id in sorted(objects):
        offsets[obj_id] = len(out)
        out += f"{obj_id} 0 obj\n".encode() + objects[obj_id] + b"\nendobj\n"
    size = max(objects) + 1
    xref_at = len(out)
    out += f"xref\n0 {size}\n".encode()
    out += b"0000000000 65535 f \n"
    for obj_id in range(1, size):
        if obj_id in offsets:
            out += f"{offsets[obj_id]:010d} 00000 n \n".encode()
        else:
            out += b"0000000000 65535 f \n"
    trailer = f"trailer\n<< /Size {size} /Root 1 0 R".encode()
    if title is not None:
        trailer += f" /Info {info_id} 0 R".encode()
    out += trailer + b" >>\n"
    out += f"startxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)


def encrypt_pdf(data: bytes, *, user_password: str, owner_password: str = "owner") -> bytes:
    """Re-save a PDF encrypted with RC4-128 (pypdf needs no extra dependency for RC4)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()
