import codecs
import io
import zipfile

import docx
import pytest

from ingest.parsers import (
    MEDIA_DOCX,
    MEDIA_HTML,
    MEDIA_MARKDOWN,
    MEDIA_PDF,
    MEDIA_PLAIN,
    UnsupportedType,
    sniff_media_type,
)
from tests.ingest.pdf_fixtures import build_pdf

PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"
ELF_HEADER = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56


def _docx_bytes() -> bytes:
    document = docx.Document()
    document.add_paragraph("hello")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


class TestBinaryFormats:
    def test_pdf_by_magic_whatever_the_name(self) -> None:
        data = build_pdf([["Hello."]])
        assert sniff_media_type(data, "report.txt") == MEDIA_PDF
        assert sniff_media_type(data, None) == MEDIA_PDF

    def test_pdf_after_bom_and_whitespace(self) -> None:
        assert sniff_media_type(b"\xef\xbb\xbf \n" + build_pdf([["Hi."]]), None) == MEDIA_PDF

    def test_docx_by_content(self) -> None:
        assert sniff_media_type(_docx_bytes(), "notes.bin") == MEDIA_DOCX

    def test_truncated_docx_is_still_docx_so_the_parser_reports_damage(self) -> None:
        data = _docx_bytes()
        assert sniff_media_type(data[: len(data) // 2], "x.docx") == MEDIA_DOCX

    @pytest.mark.parametrize(
        ("entries", "fragment"),
        [
            ({"xl/workbook.xml": b"<workbook/>"}, "Excel"),
            ({"ppt/presentation.xml": b"<p/>"}, "PowerPoint"),
            ({"readme.txt": b"just a zip"}, "ZIP"),
        ],
    )
    def test_other_zips_are_unsupported(self, entries: dict[str, bytes], fragment: str) -> None:
        with pytest.raises(UnsupportedType) as caught:
            sniff_media_type(_zip_bytes(entries), "file.docx")
        assert fragment in caught.value.reason
        assert caught.value.code == "unsupported_type"

    @pytest.mark.parametrize("header", [PNG_HEADER, ELF_HEADER], ids=["png", "elf"])
    def test_renamed_binaries_are_unsupported(self, header: bytes) -> None:
        with pytest.raises(UnsupportedType):
            sniff_media_type(header + b"\x00\x01\x02" * 100, "evil.pdf")

    def test_binary_junk_with_nul_bytes_is_unsupported(self) -> None:
        junk = bytes(range(256)) * 16
        with pytest.raises(UnsupportedType):
            sniff_media_type(junk, "notes.txt")

    def test_undecodable_bytes_without_nul_are_unsupported(self) -> None:
        junk = bytes((i * 37 + 11) % 31 + 1 for i in range(4096))  # mostly C0 controls
        with pytest.raises(UnsupportedType):
            sniff_media_type(junk, None)


class TestTextFormats:
    @pytest.mark.parametrize(
        "data",
        [
            b"<!DOCTYPE html><html><body>x</body></html>",
            b"  \n<html lang='en'><p>x</p></html>",
            b"\xef\xbb\xbf<!-- generated -->\n<!doctype HTML><p>x",
            b"<?xml version='1.0'?>\n<!DOCTYPE html><html/>",
            b"<head><title>t</title></head>",
            b"<body>\n<p>x</p>",
            b"<p>one</p><p>a fragment, as CMS exports often are",
            b"<div class='post'><h2>News</h2></div>",
            b"<h1>Title</h1>",
        ],
    )
    def test_html_by_leading_markup(self, data: bytes) -> None:
        assert sniff_media_type(data, "page.txt") == MEDIA_HTML

    def test_html_in_utf16(self) -> None:
        data = "<html><body>你好</body></html>".encode("utf-16")
        assert sniff_media_type(data, None) == MEDIA_HTML

    def test_markup_later_in_text_is_not_html(self) -> None:
        assert sniff_media_type(b"Use <html> tags like this.", None) == MEDIA_PLAIN
        assert sniff_media_type(b"<pre-release notes> follow", None) == MEDIA_PLAIN

    @pytest.mark.parametrize("name", ["notes.md", "NOTES.MARKDOWN", "dir\\x.md"])
    def test_markdown_by_extension(self, name: str) -> None:
        assert sniff_media_type(b"no headings here", name) == MEDIA_MARKDOWN

    def test_markdown_by_heading_without_name(self) -> None:
        assert sniff_media_type(b"intro\n\n## Setup\n\ntext", None) == MEDIA_MARKDOWN

    def test_txt_name_stays_plain_even_with_hashes(self) -> None:
        assert sniff_media_type(b"# not markdown, a .txt file", "a.txt") == MEDIA_PLAIN

    def test_plain_text_without_name(self) -> None:
        assert sniff_media_type(b"hello world\n#hashtag", None) == MEDIA_PLAIN

    def test_text_named_pdf_is_text(self) -> None:
        assert sniff_media_type(b"just words", "fake.pdf") == MEDIA_PLAIN

    @pytest.mark.parametrize(
        "data",
        [
            "第一章 总则。为了规范管理，制定本办法。".encode("gbk"),
            "中文测试".encode("gbk"),
            "知识库".encode("utf-16"),
            codecs.BOM_UTF16_BE + "知识库".encode("utf-16-be"),
            "plain ASCII in BOM-less UTF-16".encode("utf-16-le"),
            "Grüße".encode("cp1252"),
        ],
    )
    def test_legacy_and_utf16_encodings_are_text(self, data: bytes) -> None:
        assert sniff_media_type(data, None) == MEDIA_PLAIN

    def test_empty_is_plain_text_and_left_to_the_parser(self) -> None:
        assert sniff_media_type(b"", None) == MEDIA_PLAIN
