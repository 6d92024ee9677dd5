"""A document's processing status, and the one place that changes it.

    queued ──▶ processing ──▶ ready
      ▲            │
      └── failed ◀─┘          (any, not yet purged) ──▶ purging ──▶ (row deleted)

`deleted` is not a status: a soft delete sets `deleted_at` and keeps the status, so a restore
goes back to it. Replacing the file of a ready or failed document queues it again (the old
version is erased first, by the ingestion job: app/documents/purge.py `erase_replaced`).
Every transition is a method here; nothing else assigns `Document.status`
(tests/test_architecture.py), so what each state means — progress, error fields, whether a
purge wins — is decided once.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy import exists, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Chunk, Document
from app.models.base import utcnow
from ingest.parsers import (
    DecompressionLimitExceeded,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    MalformedDocument,
    ParseError,
    UnsupportedType,
)

# Failures that lie in the file itself: reading the same bytes again fails the same way, so no
# retry is offered; replacing the file is the way on. Every other failure (a worker that died
# or ran out of time or memory: `processing_error`; an embedder an operator has to fix:
# `embedder_mismatch`) can pass on another attempt.
PERMANENT_FAILURES = frozenset(
    error.code
    for error in (
        ParseError,
        UnsupportedType,
        EmptyDocument,
        EncryptedDocument,
        MalformedDocument,
        DecompressionLimitExceeded,
        DocumentTooLarge,
    )
)


class DocumentStatus(StrEnum):
    """Stored in `documents.status`: never rename a value."""

    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    # A hard delete is under way: ingestion must not write, search never shows it.
    PURGING = "purging"


def retryable(document: Document) -> bool:
    """Whether the document failed and another attempt at the same file could succeed."""
    return (
        document.status == DocumentStatus.FAILED
        and document.deleted_at is None
        and document.error_code not in PERMANENT_FAILURES
    )


class DocumentStatusRepository:
    def mark_queued(self, document: Document) -> None:
        """Waiting for an ingestion job (a new upload, a failed one retried, a file replaced)."""
        document.status = DocumentStatus.QUEUED
        document.progress = 0.0
        document.error = document.error_code = None
        document.updated_at = utcnow()

    def mark_processing(self, document: Document) -> None:
        """A worker took its ingestion job."""
        document.status = DocumentStatus.PROCESSING
        document.progress = 0.0
        document.error = document.error_code = None

    def mark_failed(self, document: Document, *, code: str, message: str) -> bool:
        """The ingestion gave up (`message` is shown to users: no file content). A document
        being purged stays so; whether it was marked."""
        if document.status == DocumentStatus.PURGING:
            return False
        document.status = DocumentStatus.FAILED
        document.error_code = code
        document.error = message
        return True

    def mark_purging(self, document: Document) -> None:
        """A hard delete was requested: from now on nothing may write to the document."""
        document.status = DocumentStatus.PURGING

    async def mark_ready(self, session: AsyncSession, document_ids: Sequence[int]) -> None:
        """Those of `document_ids` still processing whose every chunk is in the index (in the
        index writer's transaction that records the shard versions holding them)."""
        pending = exists().where(Chunk.document_id == Document.id, Chunk.shard_no.is_(None))
        await session.execute(
            update(Document)
            .where(
                Document.id.in_(document_ids),
                Document.status == DocumentStatus.PROCESSING,
                ~pending,
            )
            .values(status=DocumentStatus.READY, progress=1.0)
        )


document_status = DocumentStatusRepository()
