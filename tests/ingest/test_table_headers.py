"""Markdown, DOCX and HTML tables reach the chunker with their header row marked, so a row
is never read without it: "B3 | 30k-40k" always under "Band | Salary range"."""

from __future__ import annotations

import io

import docx
import pytest

from app.kit.settings import ChunkingConfig, ParseLimits
from ingest.chunking import TEMPLATES, chunk_document
from ingest.parsers import Block, ParsedDocument, parse
from tests.ingest.table_fixtures import B3, BANDS, HEADER, docx_table, html_table, markdown_table

LIMITS = ParseLimits()


SOURCES = {
    "markdown": ("pay.md", markdown_table),
    "docx": ("pay.docx", docx_table),
    "html": ("pay.html", html_table),
    "html without th": ("pay.html", lambda: html_table(th=False)),
}


def _marked(doc: ParsedDocument) -> list[tuple[str, bool]]:
    return [(b.text, b.table_header) for b in doc.blocks]


def _table_blocks(doc: ParsedDocument) -> list[Block]:
    return [b for b in doc.blocks if b.kind == "table" and b.text != "Bands"]


@pytest.mark.parametrize("source", list(SOURCES))
def test_the_header_row_is_marked(source: str) -> None:
    filename, make = SOURCES[source]
    blocks = _table_blocks(parse(make(), filename, LIMITS))
    assert blocks[0] == Block(HEADER, ("Pay",), "table", table_header=True)
    assert [b.text for b in blocks[1:]] == [f"{band} | {salary}" for band, salary in BANDS]
    assert not any(b.table_header for b in blocks[1:])


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("source", list(SOURCES))
def test_the_b3_row_is_read_under_its_header(source: str, template: str) -> None:
    filename, make = SOURCES[source]
    config = ChunkingConfig(max_tokens=48, overlap_tokens=8, template=template)
    chunks = chunk_document(parse(make(), filename, LIMITS), config)
    holding = [c for c in chunks if B3 in c.text.split("\n")]
    assert holding
    for chunk in holding:
        lines = chunk.text.split("\n")
        assert HEADER in lines[: lines.index(B3)], chunk.text
    if template == "table":
        assert [c.text for c in holding] == [f"{HEADER}\n{B3}"]
    # No chunk holds any row without the header above it.
    rows = {f"{band} | {salary}" for band, salary in BANDS}
    for chunk in chunks:
        lines = chunk.text.split("\n")
        first_row = next((i for i, line in enumerate(lines) if line in rows), None)
        if first_row is not None:
            assert lines[first_row - 1] == HEADER, chunk.text


def test_markdown_table_with_an_empty_header_has_no_header() -> None:
    doc = parse(b"| | |\n|---|---|\n| a | 1 |\n| b | 2 |\n", "t.md", LIMITS)
    assert _marked(doc) == [("a | 1", False), ("b | 2", False)]


def test_consecutive_markdown_tables_each_have_a_header() -> None:
    doc = parse(
        b"| A | B |\n|---|---|\n| 1 | 2 |\n\n| C | D |\n|---|---|\n| 3 | 4 |\n", "t.md", LIMITS
    )
    assert _marked(doc) == [
        ("A | B", True),
        ("1 | 2", False),
        ("C | D", True),
        ("3 | 4", False),
    ]


def test_docx_header_is_the_first_row_with_text() -> None:
    document = docx.Document()
    table = document.add_table(rows=3, cols=2)
    table.cell(1, 0).text = "Band"
    table.cell(1, 1).text = "Grade"
    table.cell(2, 0).text = "B1"
    table.cell(2, 1).text = "junior"
    second = document.add_table(rows=2, cols=2)
    second.cell(0, 0).text = "Key"
    second.cell(1, 0).text = "k1"
    buffer = io.BytesIO()
    document.save(buffer)
    doc = parse(buffer.getvalue(), "t.docx", LIMITS)
    assert _marked(doc) == [
        ("Band | Grade", True),
        ("B1 | junior", False),
        ("Key", True),
        ("k1", False),
    ]


def test_html_nested_tables_have_their_own_first_rows() -> None:
    html = (
        b"<table><tr><th>Outer</th><th>Cell</th></tr>"
        b"<tr><td>o1</td><td><table><tr><td>In</td></tr><tr><td>i1</td></tr></table></td></tr>"
        b"<tr><td>o2</td><td>x</td></tr></table>"
    )
    doc = parse(html, "t.html", LIMITS)
    headers = [b.text for b in doc.blocks if b.table_header]
    assert headers == ["Outer | Cell", "In"]
    assert not any(b.table_header for b in doc.blocks if b.text in ("i1", "o2 | x"))
