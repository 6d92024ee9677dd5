from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.kit.public_ids import DocumentId, ReceiptId
from app.kit.text import DisplayText

Sensitivity = Literal["public", "internal", "confidential"]
DocumentStatus = Literal["queued", "processing", "ready", "failed", "deleted", "purging"]
TAG_PATTERN = re.compile(r"^[\w][\w .:/-]{0,63}$", re.UNICODE)
MAX_TAGS = 32
# Entries a request may send before de-duplication (blank and repeated ones are dropped).
MAX_TAG_ENTRIES = 4 * MAX_TAGS


def clean_tags(values: list[str]) -> list[str]:
    """Trimmed, de-duplicated, validated tags (ValueError when one is invalid)."""
    tags: list[str] = []
    for raw in values:
        tag = raw.strip()
        if not tag:
            continue
        if not TAG_PATTERN.match(tag):
            raise ValueError(f"invalid tag {tag[:70]!r}: letters, digits, ' .:/-_', max 64")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    return tags


class DocumentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Cleaned of bidi and control characters; nothing visible left is a 422.
    title: DisplayText | None = Field(default=None, min_length=1, max_length=500)
    tags: list[Annotated[str, Field(max_length=200)]] | None = Field(
        default=None, max_length=MAX_TAG_ENTRIES
    )
    sensitivity: Sensitivity | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else clean_tags(value)


class DocumentAccepted(BaseModel):
    id: DocumentId
    status: DocumentStatus
    # A purge's deletion receipt (GET /api/v1/tenants/{t}/deletion-receipts/{receipt_id}).
    receipt_id: ReceiptId | None = None


class DocumentRead(BaseModel):
    id: DocumentId
    title: str
    filename: str | None
    media_type: str
    size_bytes: int
    sha256: str
    sensitivity: Sensitivity
    tags: list[str]
    status: DocumentStatus
    error: str | None
    error_code: str | None
    # Failed for a reason another attempt can cure (POST …/retry); false for a failure in the
    # file itself, which only a replaced file (PUT …/file) can cure.
    retryable: bool
    progress: float
    chunk_count: int
    page_count: int | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
