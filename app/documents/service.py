"""Documents: upload (store, sniff, de-duplicate, queue), list, read, update, delete, restore,
replace the file, download the original."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import BinaryIO

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.cache import versions
from app.documents.repository import document_repository
from app.documents.schemas import DocumentRead, DocumentUpdate
from app.documents.status import DocumentStatus, document_status, retryable
from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.kit.actor import user_id_of
from app.kit.authz import SystemAccess, TenantAccess
from app.kit.db import Database
from app.kit.errors import (
    BadRequest,
    Conflict,
    PayloadTooLarge,
    ResourceNotFound,
    UnsupportedMediaType,
)
from app.kit.public_ids import IdKind, encode_id
from app.kit.storage import ContentStore, TooLarge
from app.kit.text import clean_display_text
from app.models import Chunk, DeletionReceipt, Document, Job
from app.models.base import utcnow
from app.receipts.repository import receipt_repository
from app.receipts.service import VERSION_SUBJECT, receipt_service
from ingest.parsers import UnsupportedType, sniff_media_type


def _display_name(filename: str | None) -> str | None:
    # Only the last path component, for display: the client's path is never used for storage.
    if not filename:
        return None
    name = clean_display_text(PurePath(filename.replace("\\", "/")).name)
    return name[:255] or None


@dataclass(frozen=True)
class _StoredFile:
    sha256: str
    size: int
    media_type: str
    name: str | None


class DocumentService:
    async def relocate_legacy_blob(
        self,
        database: Database,
        store: ContentStore,
        sha256: str,
        *,
        except_document: int | None = None,
    ) -> None:
        """Move one blob of the old shared layout under every tenant holding it (a blob no
        document holds any more is removed)."""
        async with database.read_sessionmaker() as session:
            tenants = await document_repository.tenants_holding(
                session, sha256, except_document=except_document
            )
        await asyncio.to_thread(store.relocate_legacy, sha256, tenants)

    async def relocate_legacy_blobs(self, database: Database, store: ContentStore) -> int:
        """Move every blob of the old shared layout to per-tenant blobs (at start-up; a no-op
        once done); how many were moved."""
        legacy = await asyncio.to_thread(store.legacy_blobs)
        for sha256 in legacy:
            await self.relocate_legacy_blob(database, store, sha256)
        return len(legacy)

    async def upload(
        self,
        session: AsyncSession,
        access: TenantAccess | SystemAccess,
        *,
        stream: BinaryIO,
        filename: str | None,
        title: str | None,
        tags: Sequence[str],
        sensitivity: str,
        store: ContentStore,
        max_bytes: int,
    ) -> tuple[Document, Job]:
        """Store the file by content hash, refuse duplicates/unsupported types, queue ingestion."""
        stored = await self._take_file(
            session, access, stream=stream, filename=filename, store=store, max_bytes=max_bytes
        )
        sha256, size, media_type, name = stored.sha256, stored.size, stored.media_type, stored.name
        document = document_repository.add(
            session,
            Document(
                tenant_id=access.tenant_id,
                title=clean_display_text(title or "") or (name or f"document {sha256[:8]}"),
                filename=name,
                media_type=media_type,
                size_bytes=size,
                content_sha256=sha256,
                sensitivity=sensitivity,
                status=DocumentStatus.QUEUED,
                uploaded_by=user_id_of(access.actor),
            ),
        )
        await session.flush()
        await document_repository.set_tags(session, document.id, tags)
        job = await self._queue_ingestion(session, document)
        await audit_service.record(
            session,
            action="document.upload",
            actor=access.actor,
            tenant_id=access.tenant_id,
            target_type="document",
            target_id=document.id,
            details={"media_type": media_type, "size_bytes": size, "sensitivity": sensitivity},
        )
        return document, job

    async def _take_file(
        self,
        session: AsyncSession,
        access: TenantAccess | SystemAccess,
        *,
        stream: BinaryIO,
        filename: str | None,
        store: ContentStore,
        max_bytes: int,
        replacing: Document | None = None,
    ) -> _StoredFile:
        """Store an uploaded file by content hash; refuse one too large (413), empty (400), held
        by a document already (409) or of an unsupported type (415). A refused file's blob is
        removed unless a document holds it."""
        tenant_id = access.tenant_id
        key = await store.write_key(tenant_id, session)
        try:
            sha256, size = await asyncio.to_thread(
                store.put_stream, stream, tenant_id=tenant_id, max_bytes=max_bytes, key=key
            )
        except TooLarge as exc:
            raise PayloadTooLarge(f"File exceeds the {max_bytes}-byte upload limit") from exc
        if size == 0:
            # No document ever references the empty blob (every empty upload ends here).
            await asyncio.to_thread(store.delete, tenant_id, sha256)
            raise BadRequest("The file is empty", code="empty_file")
        existing = await document_repository.find_by_content(session, tenant_id, sha256)
        if existing is not None and replacing is not None and existing.id == replacing.id:
            raise Conflict("The new file is the same as the current one", code="same_content")
        if existing is not None:
            state = "deleted" if existing.deleted_at else existing.status
            raise Conflict(
                f"This file was already uploaded as document "
                f"{encode_id(IdKind.DOCUMENT, existing.id)} ({state})",
                code="duplicate_document",
            )
        name = _display_name(filename)
        try:
            # The whole file (bounded by max_bytes): a DOCX is known by its zip directory,
            # which sits at the end.
            data = await asyncio.to_thread(store.read, tenant_id, sha256, key)
            media_type = sniff_media_type(data, name)
        except UnsupportedType as exc:
            await asyncio.to_thread(store.delete, tenant_id, sha256)
            raise UnsupportedMediaType(exc.reason) from exc
        return _StoredFile(sha256, size, media_type, name)

    async def replace(
        self,
        session: AsyncSession,
        access: TenantAccess,
        document_id: int,
        *,
        stream: BinaryIO,
        filename: str | None,
        store: ContentStore,
        max_bytes: int,
    ) -> tuple[Document, Job, DeletionReceipt]:
        """Put a new file in place of a ready or failed document's and queue its ingestion.

        The document keeps its id, title, tags and sensitivity. The old version is not kept:
        the ingestion job first erases it from every store (chunks, vectors, postings, answers
        that quoted it, the stored file) and verifies that, completing the deletion receipt
        opened here (app/documents/purge.py `erase_replaced`); only then is the new file read.
        Until the new version is indexed, search and chat show nothing of the document."""
        document = await self._writable(session, access, document_id)
        if document.status == DocumentStatus.PURGING:
            raise Conflict("The document is being purged", code="document_purging")
        if document.deleted_at is not None:
            raise Conflict(
                "The document is deleted: restore it before replacing its file",
                code="document_deleted",
            )
        if document.status in (DocumentStatus.QUEUED, DocumentStatus.PROCESSING):
            raise Conflict(
                "The document is being processed: replace its file once it is ready or failed",
                code="document_processing",
            )
        if await receipt_repository.open_for(session, VERSION_SUBJECT, document.id) is not None:
            raise Conflict(
                "The previous file is still being erased: retry the document first",
                code="previous_version_pending",
            )
        stored = await self._take_file(
            session,
            access,
            stream=stream,
            filename=filename,
            store=store,
            max_bytes=max_bytes,
            replacing=document,
        )
        receipt = await receipt_service.open(
            session,
            subject_type=VERSION_SUBJECT,
            subject_id=document.id,
            tenant_id=access.tenant_id,
            requested_by=access.principal,
            content_sha256=document.content_sha256,
            name=f"{document.title}\n{document.filename or ''}",
        )
        document.content_sha256 = stored.sha256
        document.size_bytes = stored.size
        document.media_type = stored.media_type
        document.filename = stored.name
        document.chunk_count = 0
        document.page_count = None
        document_status.mark_queued(document)
        job = await self._queue_ingestion(session, document)
        await audit_service.record(
            session,
            action="document.replace",
            actor=access.principal,
            tenant_id=access.tenant_id,
            target_type="document",
            target_id=document.id,
            details={
                "receipt_id": receipt.id,
                "media_type": stored.media_type,
                "size_bytes": stored.size,
            },
        )
        # Answers cached from the old version are not found again.
        await versions.bump(session, access.tenant_id)
        return document, job, receipt

    async def original(
        self, session: AsyncSession, access: TenantAccess, document_id: int, *, store: ContentStore
    ) -> tuple[Document, bytes]:
        """A visible document's original file, decrypted when it is sealed at rest; audited.
        Deleted and purging documents are not found, like in search."""
        document = await document_repository.get_readable(
            session, access, document_id, include_deleted=False
        )
        if document is None or document.status == DocumentStatus.PURGING:
            raise ResourceNotFound("Document not found")
        key = await store.read_key(access.tenant_id)
        try:
            data = await asyncio.to_thread(
                store.read, access.tenant_id, document.content_sha256, key
            )
        except FileNotFoundError as exc:
            raise ResourceNotFound("The document's file is not stored") from exc
        await audit_service.record(
            session,
            action="document.download",
            actor=access.principal,
            tenant_id=access.tenant_id,
            target_type="document",
            target_id=document.id,
            details={"size_bytes": len(data), "sensitivity": document.sensitivity},
        )
        return document, data

    async def get(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Document | None:
        """A document the caller may see; soft-deleted ones only for those who may restore."""
        return await document_repository.get_readable(
            session, access, document_id, include_deleted=access.can("documents", "write")
        )

    async def list_visible(
        self,
        session: AsyncSession,
        access: TenantAccess,
        *,
        status: str | None,
        tag: str | None,
        limit: int,
        offset: int,
        sensitivity: str | None = None,
        title: str | None = None,
    ) -> tuple[Sequence[Document], int]:
        """The caller's visible documents, newest first."""
        return await document_repository.list_readable(
            session,
            access,
            include_deleted=access.can("documents", "write"),
            status=status,
            tag=tag,
            limit=limit,
            offset=offset,
            sensitivity=sensitivity,
            title=title,
        )

    async def retry(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> tuple[Document, Job]:
        """Queue a failed document's ingestion again (a new job; the failed one stays in its
        history)."""
        document = await self._writable(session, access, document_id)
        if document.deleted_at is not None or document.status != "failed":
            raise Conflict("Only a failed document can be retried", code="not_failed")
        if not retryable(document):
            raise Conflict(
                f"The file itself cannot be read ({document.error_code}): another attempt would "
                "fail the same way. Replace the file instead",
                code="not_retryable",
            )
        document_status.mark_queued(document)
        job = await self._queue_ingestion(session, document)
        await audit_service.record(
            session,
            action="document.retry",
            actor=access.principal,
            tenant_id=access.tenant_id,
            target_type="document",
            target_id=document.id,
        )
        return document, job

    async def _queue_ingestion(self, session: AsyncSession, document: Document) -> Job:
        job = job_repository.add(
            session, Job(kind=JobKind.INGEST, tenant_id=document.tenant_id, document_id=document.id)
        )
        await session.flush()
        return job

    async def chunks(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Sequence[Chunk]:
        """A visible document's chunks in order (404 when the document is not visible)."""
        document = await self.visible(session, access, document_id)
        return await document_repository.chunks(session, document.id)

    async def jobs(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Sequence[Job]:
        """A visible document's ingestion jobs, oldest first (404 when not visible)."""
        document = await self.visible(session, access, document_id)
        return await job_repository.for_document(session, document.id)

    async def visible(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Document:
        """A document the caller may see (404 otherwise)."""
        document = await self.get(session, access, document_id)
        if document is None:
            raise ResourceNotFound("Document not found")
        return document

    async def update(
        self, session: AsyncSession, access: TenantAccess, document_id: int, data: DocumentUpdate
    ) -> Document:
        """Change title, tags or sensitivity."""
        document = await self._writable(session, access, document_id)
        if document.status == "purging":
            raise Conflict("The document is being purged")
        changed: list[str] = []
        if data.title is not None and data.title != document.title:
            document.title = data.title
            changed.append("title")
        if data.sensitivity is not None and data.sensitivity != document.sensitivity:
            document.sensitivity = data.sensitivity
            changed.append("sensitivity")
        if data.tags is not None:
            await document_repository.set_tags(session, document.id, data.tags)
            changed.append("tags")
        document.updated_at = utcnow()
        await audit_service.record(
            session,
            action="document.update",
            actor=access.principal,
            tenant_id=access.tenant_id,
            target_type="document",
            target_id=document.id,
            details={"fields": changed, "sensitivity": document.sensitivity},
        )
        await session.flush()
        if changed:
            # Sensitivity and tags decide who sees it, the title shows in cached citations.
            await versions.bump(session, access.tenant_id)
        return document

    async def soft_delete(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> None:
        """Hide a document from search and chat at once; restorable within the retention window."""
        document = await self._writable(session, access, document_id)
        if document.deleted_at is not None:
            return
        document.deleted_at = utcnow()
        document.deleted_by = access.principal.user_id
        await audit_service.record(
            session,
            action="document.delete",
            actor=access.principal,
            tenant_id=access.tenant_id,
            target_type="document",
            target_id=document.id,
        )
        await versions.bump(session, access.tenant_id)

    async def restore(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Document:
        """Undo a soft delete."""
        document = await self._writable(session, access, document_id)
        if document.status == "purging":
            raise Conflict("The document is being purged and cannot be restored")
        if document.deleted_at is None:
            raise Conflict("The document is not deleted")
        document.deleted_at = None
        document.deleted_by = None
        await audit_service.record(
            session,
            action="document.restore",
            actor=access.principal,
            tenant_id=access.tenant_id,
            target_type="document",
            target_id=document.id,
        )
        # Answers cached while it was deleted were written without it.
        await versions.bump(session, access.tenant_id)
        return document

    async def read_models(
        self, session: AsyncSession, documents: Sequence[Document]
    ) -> list[DocumentRead]:
        """API views of documents, tags included."""
        tags = await document_repository.tags(session, [d.id for d in documents])
        return [
            DocumentRead(
                id=d.id,
                title=d.title,
                filename=d.filename,
                media_type=d.media_type,
                size_bytes=d.size_bytes,
                sha256=d.content_sha256,
                sensitivity=d.sensitivity,
                tags=tags.get(d.id, []),
                status=_shown_status(d),
                error=d.error,
                error_code=d.error_code,
                retryable=retryable(d),
                progress=d.progress,
                chunk_count=d.chunk_count,
                page_count=d.page_count,
                created_at=d.created_at,
                updated_at=d.updated_at,
                deleted_at=d.deleted_at,
            )
            for d in documents
        ]

    async def _writable(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Document:
        document = await document_repository.get_readable(
            session, access, document_id, include_deleted=True
        )
        if document is None:
            raise ResourceNotFound("Document not found")
        return document


def _shown_status(document: Document) -> str:
    if document.status == "purging":
        return "purging"
    return "deleted" if document.deleted_at else document.status


document_service = DocumentService()
