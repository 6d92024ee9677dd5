"""A tenant's audit log as a download: CSV for a spreadsheet, JSON Lines for a program.

Both carry the same columns (app.audit.schemas.AuditExportRow). A CSV cell is text a
spreadsheet may take for a formula: every cell starting with = + - @ (or a tab or carriage
return, which some spreadsheets skip before looking) is prefixed with a single quote, so it is
shown as written and never evaluated.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Literal

from app.audit.schemas import AuditExportRow

ExportFormat = Literal["csv", "jsonl"]

MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
}
CSV_COLUMNS = (
    "id",
    "seq",
    "created_at",
    "action",
    "outcome",
    "actor_kind",
    "actor",
    "target_type",
    "target_id",
    "details",
    "entry_hash",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """A CSV cell no spreadsheet evaluates as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text


def _csv_line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()


def csv_cells(row: AuditExportRow) -> list[str]:
    """A row's CSV cells, in CSV_COLUMNS order (details as canonical JSON)."""
    data = row.model_dump(mode="json")
    data["details"] = json.dumps(
        data["details"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return [safe_cell(data[column]) for column in CSV_COLUMNS]


async def encode(rows: AsyncIterator[AuditExportRow], fmt: ExportFormat) -> AsyncIterator[str]:
    """The export's text, a line at a time (CSV starts with its header line)."""
    if fmt == "csv":
        yield _csv_line(list(CSV_COLUMNS))
    async for row in rows:
        if fmt == "csv":
            yield _csv_line(csv_cells(row))
        else:
            yield row.model_dump_json() + "\n"
