from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.kit.public_ids import DocumentId, ReceiptId, UserId
from app.models import DeletionReceipt
from app.receipts.service import VERSION_SUBJECT


class VerificationRead(BaseModel):
    passed: bool
    checks: list[dict[str, Any]]


class ReceiptRead(BaseModel):
    id: ReceiptId
    # "document_version": the version of a document's file that replacing the file put aside
    # (the document itself stays).
    subject_type: Literal["document", "document_version", "user"]
    # The purged document's public id (for a document or document_version receipt).
    document_id: DocumentId | None
    content_sha256: str | None
    # Keyed hash of the title and file name (documents) or the username (people): they
    # survive nowhere else.
    name_digest: str | None
    requested_by: UserId | None
    requested_at: datetime
    completed_at: datetime | None
    status: Literal["pending", "done", "failed"]
    error: str | None
    removed: dict[str, int]
    verification: VerificationRead | None
    receipt_hash: str | None

    @classmethod
    def of(cls, receipt: DeletionReceipt) -> ReceiptRead:
        verification = json.loads(receipt.verification or "{}")
        return cls(
            id=receipt.id,
            subject_type=_subject_type(receipt.subject_type),
            document_id=receipt.subject_id if receipt.subject_type != "user" else None,
            content_sha256=receipt.content_sha256,
            name_digest=receipt.name_digest,
            requested_by=receipt.requested_by,
            requested_at=receipt.requested_at,
            completed_at=receipt.completed_at,
            status=receipt.status,
            error=receipt.error,
            # Counts only: a pending purge also keeps its chunks' keys there, for its retries.
            removed={
                k: v for k, v in json.loads(receipt.removed or "{}").items() if isinstance(v, int)
            },
            verification=VerificationRead(**verification) if verification else None,
            receipt_hash=receipt.receipt_hash,
        )


def _subject_type(stored: str) -> Literal["document", "document_version", "user"]:
    if stored == "user":
        return "user"
    return "document_version" if stored == VERSION_SUBJECT else "document"
