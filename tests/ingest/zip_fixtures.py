"""Hostile DOCX archives for parser and API tests."""

import io
import zipfile

MB = 1024 * 1024

CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/word/document.xml" ContentType="application/'
    b'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)


def docx_zip_bomb(size: int) -> bytes:
    """A zip with a real [Content_Types].xml and a huge, trivially compressible document.xml."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        chunk = b"A" * MB
        with archive.open("word/document.xml", "w", force_zip64=True) as entry:
            for _ in range(size // MB):
                entry.write(chunk)
    return buffer.getvalue()
