import codecs
import io
import random
import struct
import zipfile

import docx
import pytest

from app.kit.settings import ParseLimits
from ingest.parsers import (
    MEDIA_DOCX,
    MEDIA_HTML,
    MEDIA_MARKDOWN,
    MEDIA_PDF,
    MEDIA_PLAIN,
    Block,
    DecompressionLimitExceeded,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    MalformedDocument,
    ParsedDocument,
    ParseError,
    UnsupportedType,
    parse,
)
from ingest.parsers.docx import parse_docx
from ingest.parsers.text import decode_text
from tests.ingest.pdf_fixtures import build_pdf, encrypt_pdf
from tests.ingest.zip_fixtures import CONTENT_TYPES, docx_zip_bomb

LIMITS = ParseLimits()
SECRET = "SECRET-CONTENT-7f3a"
MB = 1024 * 1024


def _texts(doc: ParsedDocument) -> str:
    return "\n".join(block.text for block in doc.blocks)


def _body(doc: ParsedDocument) -> list[Block]:
    return [block for block in doc.blocks if block.kind != "heading"]


# ---------------------------------------------------------------- fixtures built in code


def _sample_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Core title"
    document.add_heading("Handbook", 0)
    document.add_heading("第一章 总则", 1)
    document.add_paragraph("这是中文段落。第二句！")
    document.add_paragraph("First bullet", style="List Bullet")
    document.add_heading("Details", 2)
    document.add_paragraph("English paragraph under details.")
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).text = "Name"
    table.cell(0, 1).text = "Role"
    table.cell(0, 1).merge(table.cell(0, 2))
    table.cell(1, 0).text = "Ada"
    table.cell(1, 1).text = "Engineer"
    table.cell(1, 2).text = "London"
    document.add_heading("Appendix", 1)
    document.add_paragraph("Closing words.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _with_declared_size(data: bytes, name: str, declared: int) -> bytes:
    """Rewrite an entry's uncompressed size in both headers, as a hostile archive would."""
    patched = bytearray(data)
    encoded = name.encode()
    central = 0
    while (central := patched.find(b"PK\x01\x02", central)) != -1:
        name_length = struct.unpack_from("<H", patched, central + 28)[0]
        if patched[central + 46 : central + 46 + name_length] == encoded:
            struct.pack_into("<I", patched, central + 24, declared)
            local = struct.unpack_from("<I", patched, central + 42)[0]
            struct.pack_into("<I", patched, local + 22, declared)
            return bytes(patched)
        central += 4
    raise LookupError(name)


def _plain_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


# ---------------------------------------------------------------- plain text and encodings


class TestText:
    def test_gbk_chinese_decodes(self) -> None:
        text = "第一章 总则\n\n第一条 为了规范知识库管理，制定本办法。"
        doc = parse(text.encode("gbk"), "rules.txt", LIMITS)
        assert doc.media_type == MEDIA_PLAIN
        assert [b.text for b in doc.blocks] == [
            "第一章 总则",
            "第一条 为了规范知识库管理，制定本办法。",
        ]

    def test_short_gbk_prefers_gb18030_over_korean(self) -> None:
        assert decode_text("中文测试".encode("gbk")) == "中文测试"

    def test_gb18030_beyond_gbk(self) -> None:
        text = "生僻字：𠀀𠀁，普通字：知识。"
        assert decode_text(text.encode("gb18030")) == text

    @pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
    def test_bom_encodings(self, encoding: str) -> None:
        text = "Knowledge base 知识库\n\nSecond paragraph"
        data = text.encode(encoding)
        if encoding in ("utf-16-le", "utf-16-be"):
            bom = codecs.BOM_UTF16_LE if encoding.endswith("le") else codecs.BOM_UTF16_BE
            data = bom + data
        doc = parse(data, None, LIMITS)
        assert [b.text for b in doc.blocks] == ["Knowledge base 知识库", "Second paragraph"]

    def test_bomless_utf16_ascii(self) -> None:
        assert decode_text("hello world, twice".encode("utf-16-le")) == "hello world, twice"

    def test_paragraphs_split_on_blank_lines_with_crlf(self) -> None:
        doc = parse(b"one\r\nline two\r\n  \r\n\r\nthree\r\n", None, LIMITS)
        assert [b.text for b in doc.blocks] == ["one\nline two", "three"]
        assert all(b.heading_path == () and b.kind == "paragraph" for b in doc.blocks)

    @pytest.mark.parametrize("data", [b"", b"   \n\t\r\n  \n", "\u3000\n".encode()])
    def test_empty_and_whitespace_only(self, data: bytes) -> None:
        with pytest.raises(EmptyDocument) as caught:
            parse(data, "empty.txt", LIMITS)
        assert caught.value.code == "empty_document"

    def test_char_limit(self) -> None:
        with pytest.raises(DocumentTooLarge):
            parse(b"word " * 1000, None, ParseLimits(max_chars=100))


# ---------------------------------------------------------------- markdown


MARKDOWN = """\
---
title: Front matter title
---
# Guide

Intro with *emphasis*, a [link](http://example.com) and `co*de*`.

## Install

- step one
- step two

```bash
# this is a shell comment, not a heading
make install
```

| Key | Value |
|-----|-------|
| a   | 1     |

Usage
-----

Run it.
"""


class TestMarkdown:
    def test_structure(self) -> None:
        doc = parse(MARKDOWN.encode(), "guide.md", LIMITS)
        assert doc.media_type == MEDIA_MARKDOWN
        assert doc.title == "Front matter title"
        by_text = {b.text: b for b in doc.blocks}
        intro = by_text["Intro with emphasis, a link and co*de*."]
        assert intro.heading_path == ("Guide",)
        assert by_text["- step one\n- step two"].kind == "list"
        assert by_text["- step one\n- step two"].heading_path == ("Guide", "Install")
        code = by_text["# this is a shell comment, not a heading\nmake install"]
        assert code.kind == "code"
        assert code.heading_path == ("Guide", "Install")
        assert by_text["Key | Value"].kind == "table"
        assert by_text["a | 1"].kind == "table"
        assert by_text["Run it."].heading_path == ("Guide", "Usage")

    def test_last_paragraph_without_trailing_newline_is_kept(self) -> None:
        doc = parse(b"# Valves\n\nTurn the brass valve clockwise.", "a.md", LIMITS)
        assert [b.text for b in doc.blocks] == ["Valves", "Turn the brass valve clockwise."]
        listed = parse(b"# Steps\n\n- one\n- two", "b.md", LIMITS)
        assert listed.blocks[-1].text == "- one\n- two"

    def test_no_heading_comes_from_inside_a_fence(self) -> None:
        doc = parse(MARKDOWN.encode(), "guide.md", LIMITS)
        headings = [b.text for b in doc.blocks if b.kind == "heading"]
        assert headings == ["Guide", "Install", "Usage"]

    def test_title_from_first_h1_and_unclosed_fence(self) -> None:
        doc = parse(b"# Top\n\ntext\n\n~~~\n# inside\n", "a.md", LIMITS)
        assert doc.title == "Top"
        assert doc.blocks[-1] == Block("# inside", ("Top",), "code")

    def test_deeper_heading_resets_on_shallower(self) -> None:
        doc = parse(b"# A\n## B\n### C\nx\n## D\ny\n", "a.md", LIMITS)
        assert [b.heading_path for b in _body(doc)] == [("A", "B", "C"), ("A", "D")]


# ---------------------------------------------------------------- html


HTML = f"""<!DOCTYPE html>
<html><head><title>Policy &amp; Rules</title>
<style>.{SECRET} {{ color: red }}</style>
<script>var leaked = "{SECRET}-script";</script>
<meta name="description" content="{SECRET}-meta">
</head>
<body>
<nav><a href="/">Home</a></nav>
<h1>Leave policy</h1>
<p>Employees get&nbsp;25 days &lt;paid&gt; leave.<br>Ask HR.</p>
<div hidden>{SECRET}-hidden-attr</div>
<p style="color: red; DISPLAY : none">{SECRET}-display-none</p>
<span aria-hidden="true">{SECRET}-aria</span>
<noscript>{SECRET}-noscript</noscript>
<template><p>{SECRET}-template</p></template>
<svg><text>{SECRET}-svg</text></svg>
<iframe srcdoc="x">{SECRET}-iframe</iframe>
<h2>Carry-over</h2>
<ul><li>Up to 5 days</li><li><p>Expires in March</p></li></ul>
<table><tr><th>Year</th><th>Days</th></tr><tr><td><p>2024</p></td><td>25</td></tr></table>
<pre>  indented
    code</pre>
<h1>Other</h1><blockquote>Quoted words.</blockquote>
</body></html>"""


class TestHtml:
    def test_visible_text_only(self) -> None:
        doc = parse(HTML.encode(), "page.html", LIMITS)
        assert doc.media_type == MEDIA_HTML
        assert SECRET not in _texts(doc)
        assert SECRET not in (doc.title or "")

    def test_structure_and_entities(self) -> None:
        doc = parse(HTML.encode(), None, LIMITS)
        assert doc.title == "Policy & Rules"
        by_text = {b.text: b for b in doc.blocks}
        leave = by_text["Employees get 25 days <paid> leave.\nAsk HR."]
        assert leave.heading_path == ("Leave policy",)
        assert by_text["Up to 5 days"].kind == "list"
        assert by_text["Expires in March"].heading_path == ("Leave policy", "Carry-over")
        assert by_text["Year | Days"].kind == "table"
        assert by_text["2024 | 25"].kind == "table"
        assert by_text["  indented\n    code"].kind == "code"
        assert by_text["Quoted words."].heading_path == ("Other",)

    def test_title_falls_back_to_h1(self) -> None:
        doc = parse(b"<html><body><h1>Only heading</h1><p>x</p></body></html>", None, LIMITS)
        assert doc.title == "Only heading"

    def test_deep_nesting_does_not_recurse(self) -> None:
        html = b"<html><body>" + b"<div>" * 5000 + b"deep text" + b"</div>" * 5000
        doc = parse(html, None, LIMITS)
        assert _texts(doc) == "deep text"

    def test_html_without_visible_text_is_empty(self) -> None:
        with pytest.raises(EmptyDocument):
            parse(
                b"<html><head><title>t</title></head><body><script>x</script></body>", None, LIMITS
            )


# ---------------------------------------------------------------- pdf


class TestPdf:
    def test_text_title_and_pages(self) -> None:
        data = build_pdf(
            [["Cairn keeps documents in house.", "Second line (with parens)."], ["Page two."]],
            title="Annual Report",
        )
        doc = parse(data, "report.pdf", LIMITS)
        assert doc.media_type == MEDIA_PDF
        assert doc.title == "Annual Report"
        assert doc.page_count == 2
        assert "Cairn keeps documents in house." in _texts(doc)
        assert "Second line (with parens)." in _texts(doc)
        assert doc.blocks[-1].text == "Page two."
        assert all(b.heading_path == () for b in doc.blocks)

    def test_compressed_streams(self) -> None:
        doc = parse(build_pdf([["Deflated text."]], compress=True), None, LIMITS)
        assert _texts(doc) == "Deflated text."

    def test_user_password_is_encrypted_document(self) -> None:
        data = encrypt_pdf(build_pdf([[SECRET]]), user_password="hunter2")
        with pytest.raises(EncryptedDocument) as caught:
            parse(data, None, LIMITS)
        assert caught.value.code == "encrypted_document"

    def test_owner_only_restrictions_open_with_empty_password(self) -> None:
        data = encrypt_pdf(build_pdf([["Printing is restricted."]]), user_password="")
        assert _texts(parse(data, None, LIMITS)) == "Printing is restricted."

    @pytest.mark.parametrize(
        "data",
        [
            build_pdf([["Some text."]])[:150],
            b"%PDF-1.7\n" + bytes(random.Random(3).randrange(256) for _ in range(2000)),
            b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 1 0 R >> endobj\n"
            b"trailer << /Root 1 0 R >>",
        ],
        ids=["truncated", "garbage", "self-referencing"],
    )
    def test_broken_pdfs_are_malformed(self, data: bytes) -> None:
        with pytest.raises(MalformedDocument):
            parse(data, "broken.pdf", LIMITS)

    def test_page_limit(self) -> None:
        data = build_pdf([["one"], ["two"], ["three"]])
        with pytest.raises(DocumentTooLarge):
            parse(data, None, ParseLimits(max_pdf_pages=2))

    def test_stream_bomb_hits_the_decompression_limit(self) -> None:
        data = build_pdf(
            [["Head."]], compress=True, padding=b" " * (2 * MB), trailing_lines=["Tail."]
        )
        assert len(data) < 10_000
        with pytest.raises(DecompressionLimitExceeded):
            parse(data, None, ParseLimits(max_decompressed_bytes=MB))
        assert _texts(parse(data, None, LIMITS)) == "Head.\nTail."

    def test_pdf_without_text_is_empty(self) -> None:
        with pytest.raises(EmptyDocument):
            parse(build_pdf([[]]), None, LIMITS)

    def test_mutated_pdfs_only_raise_parse_errors(self) -> None:
        seeds = [
            build_pdf([["Alpha beta."], ["Gamma."]], title="T"),
            build_pdf([["Z."]], compress=True),
        ]
        rng = random.Random(20240607)
        outcomes: set[str] = set()
        for _ in range(150):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                parse(bytes(data), None, LIMITS)
                outcomes.add("parsed")
            except ParseError as error:
                outcomes.add(error.code)
        assert "malformed_document" in outcomes


# ---------------------------------------------------------------- docx


class TestDocx:
    def test_structure(self) -> None:
        doc = parse(_sample_docx(), "handbook.docx", LIMITS)
        assert doc.media_type == MEDIA_DOCX
        assert doc.title == "Handbook"
        by_text = {b.text: b for b in doc.blocks}
        assert by_text["这是中文段落。第二句！"].heading_path == ("Handbook", "第一章 总则")
        assert by_text["First bullet"].kind == "list"
        details = by_text["English paragraph under details."]
        assert details.heading_path == ("Handbook", "第一章 总则", "Details")
        assert by_text["Name | Role"].kind == "table"  # merged cell appears once
        assert by_text["Ada | Engineer | London"].heading_path == details.heading_path
        assert by_text["Closing words."].heading_path == ("Handbook", "Appendix")

    def test_core_title_when_no_title_paragraph(self) -> None:
        document = docx.Document()
        document.core_properties.title = "From properties"
        document.add_paragraph("Body.")
        buffer = io.BytesIO()
        document.save(buffer)
        assert parse(buffer.getvalue(), None, LIMITS).title == "From properties"

    def test_zip_bomb_total_size(self) -> None:
        bomb = docx_zip_bomb(50 * MB)
        assert len(bomb) < MB
        with pytest.raises(DecompressionLimitExceeded) as caught:
            parse(bomb, "bomb.docx", ParseLimits(max_decompressed_bytes=10 * MB))
        assert caught.value.code == "decompression_limit"

    def test_zip_bomb_ratio_with_default_limits(self) -> None:
        with pytest.raises(DecompressionLimitExceeded):
            parse(docx_zip_bomb(4 * MB), "bomb.docx", ParseLimits())

    def test_entry_count(self) -> None:
        with pytest.raises(DecompressionLimitExceeded):
            parse(_sample_docx(), None, ParseLimits(max_zip_entries=5))

    def test_lying_declared_size_is_caught(self) -> None:
        bomb = docx_zip_bomb(4 * MB)
        liar = _with_declared_size(bomb, "word/document.xml", 1000)
        with pytest.raises((MalformedDocument, DecompressionLimitExceeded)):
            parse(liar, "liar.docx", LIMITS)

    def test_zip_that_is_not_a_docx(self) -> None:
        data = _plain_zip({"notes.txt": b"hello"})
        with pytest.raises(UnsupportedType):
            parse(data, "notes.docx", LIMITS)
        with pytest.raises(MalformedDocument):
            parse_docx(data, LIMITS)

    def test_truncated_docx_is_malformed(self) -> None:
        data = _sample_docx()
        with pytest.raises(MalformedDocument):
            parse(data[: len(data) - 200], "cut.docx", LIMITS)

    def test_broken_document_xml_is_malformed(self) -> None:
        data = _plain_zip(
            {"[Content_Types].xml": CONTENT_TYPES, "word/document.xml": b"<w:document><unclosed"}
        )
        with pytest.raises(MalformedDocument):
            parse(data, None, LIMITS)

    def test_mutated_docx_only_raise_parse_errors(self) -> None:
        seed = _sample_docx()
        rng = random.Random(7)
        for _ in range(60):
            data = bytearray(seed)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                parse(bytes(data), None, LIMITS)
            except ParseError:
                pass


# ---------------------------------------------------------------- error reasons


@pytest.mark.parametrize(
    "data",
    [
        SECRET.encode() + b"\x00\x01\x02\x03" * 64,
        b"%PDF-1.4\n" + SECRET.encode() * 10,
        encrypt_pdf(build_pdf([[SECRET]]), user_password="pw"),
        _plain_zip({"word/document.xml": SECRET.encode()}),
        _plain_zip({SECRET + ".txt": b"x"}),
    ],
    ids=["binary", "broken-pdf", "encrypted-pdf", "broken-docx", "zip"],
)
def test_reasons_never_quote_the_file(data: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse(data, f"{SECRET}.bin", LIMITS)
    assert SECRET not in caught.value.reason
    assert SECRET not in str(caught.value)
    assert caught.value.reason.endswith(".")
