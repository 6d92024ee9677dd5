"""Documents: upload (store, sniff, de-duplicate, queue), list, read, update, delete, restore."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import PurePath
from typing import BinaryIO

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.cache import versions
from app.documents.repository import document_repository
from app.documents.schemas import DocumentRead, DocumentUpdate
from app.documents.status import DocumentStatus, document_status
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
from app.models import Chunk, Document, Job
from app.models.base import utcnow
from ingest.parsers import UnsupportedType, sniff_media_type


def _display_name(filename: str | None) -> str | None:
    # Only the last path component, for display: the client's path is never used for storage.
    if not filename:
        return None
    name = clean_display_text(PurePath(filename.replace("\\", "/")).name)
    return name[:255] or None


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
        key = await store.write_key(access.tenant_id, session)
        try:
            sha256, size = store.put_stream(
                stream, tenant_id=access.tenant_id, max_bytes=max_bytes, key=key
            )
        except TooLarge as exc:
            raise PayloadTooLarge(f"File exceeds the {max_bytes}-byte upload limit") from exc
        if size == 0:
            # No document ever references the empty blob (every empty upload ends here).
            store.delete(access.tenant_id, sha256)
            raise BadRequest("The file is empty", code="empty_file")
        existing = await document_repository.find_by_content(session, access.tenant_id, sha256)
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
            media_type = sniff_media_type(store.read(access.tenant_id, sha256, key), name)
        except UnsupportedType as exc:
            store.delete(access.tenant_id, sha256)
            raise UnsupportedMediaType(exc.reason) from exc
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
        job = job_repository.add(
            session, Job(kind=JobKind.INGEST, tenant_id=access.tenant_id, document_id=document.id)
        )
        await session.flush()
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
        document_status.mark_queued(document)
        job = job_repository.add(
            session, Job(kind=JobKind.INGEST, tenant_id=access.tenant_id, document_id=document.id)
        )
        await session.flush()
        await audit_service.record(
            session,
            action="document.retry",
            actor=access.principal,
            tenant_id=access.tenant_id,
            target_type="document",
            target_id=document.id,
        )
        return document, job

    async def chunks(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Sequence[Chunk]:
        """A visible document's chunks in order (404 when the document is not visible)."""
        document = await self._visible(session, access, document_id)
        return await document_repository.chunks(session, document.id)

    async def jobs(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Sequence[Job]:
        """A visible document's ingestion jobs, oldest first (404 when not visible)."""
        document = await self._visible(session, access, document_id)
        return await job_repository.for_document(session, document.id)

    async def _visible(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Document:
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
