"""Salary-band tables in Markdown, DOCX and HTML, built in code, for the table-header tests
(tests/ingest/test_table_headers.py) and the search and chat test over them
(tests/search/test_table_rows.py). Rows run from B30 down to B1, so the B3 row sits far below
the header row and any chunk holding it keeps the header only if the chunker repeats it."""

from __future__ import annotations

import io

import docx

HEADER = "Band | Salary range"
BANDS = [(f"B{i}", f"{i * 10}k-{i * 10 + 10}k") for i in range(30, 0, -1)]
B3 = "B3 | 30k-40k"


def markdown_table() -> bytes:
    rows = "".join(f"| {band} | {salary} |\n" for band, salary in BANDS)
    return (
        "# Pay\n\nSalary bands for 2026.\n\n| Band | Salary range |\n|:---|---:|\n"
        f"{rows}\nBands are reviewed in March.\n"
    ).encode()


def docx_table() -> bytes:
    document = docx.Document()
    document.add_heading("Pay", 1)
    document.add_paragraph("Salary bands for 2026.")
    table = document.add_table(rows=len(BANDS) + 1, cols=2)
    table.cell(0, 0).text = "Band"
    table.cell(0, 1).text = "Salary range"
    for index, (band, salary) in enumerate(BANDS, start=1):
        table.cell(index, 0).text = band
        table.cell(index, 1).text = salary
    document.add_paragraph("Bands are reviewed in March.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def html_table(*, th: bool = True) -> bytes:
    cell = "th" if th else "td"
    rows = "".join(f"<tr><td>{band}</td><td>{salary}</td></tr>" for band, salary in BANDS)
    return (
        "<html><body><h1>Pay</h1><p>Salary bands for 2026.</p>"
        f"<table><caption>Bands</caption><thead><tr><{cell}>Band</{cell}>"
        f"<{cell}>Salary range</{cell}></tr></thead><tbody>{rows}</tbody></table>"
        "<p>Bands are reviewed in March.</p></body></html>"
    ).encode()
