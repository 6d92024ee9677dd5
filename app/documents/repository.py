"""Document queries. `readable_statement` is the one place document visibility lives."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.authz import TenantAccess
from app.models import Chunk, Document, DocumentTag, Tenant


class DocumentRepository:
    def readable_statement(
        self, access: TenantAccess, *, include_deleted: bool = False
    ) -> Select[Document]:
        """Documents of the access's tenant at sensitivities the caller may see."""
        stmt = select(Document).where(
            Document.tenant_id == access.tenant_id,
            Document.sensitivity.in_(access.sensitivity),
        )
        if not include_deleted:
            stmt = stmt.where(Document.deleted_at.is_(None))
        return stmt

    async def get_readable(
        self,
        session: AsyncSession,
        access: TenantAccess,
        document_id: int,
        *,
        include_deleted: bool,
    ) -> Document | None:
        stmt = self.readable_statement(access, include_deleted=include_deleted).where(
            Document.id == document_id
        )
        return await session.scalar(stmt)

    async def list_readable(
        self,
        session: AsyncSession,
        access: TenantAccess,
        *,
        include_deleted: bool,
        status: str | None,
        tag: str | None,
        limit: int,
        offset: int,
        sensitivity: str | None = None,
        title: str | None = None,
    ) -> tuple[Sequence[Document], int]:
        stmt = self.readable_statement(access, include_deleted=include_deleted)
        if sensitivity is not None:
            stmt = stmt.where(Document.sensitivity == sensitivity)
        if title:
            # A literal substring: LIKE's wildcards in the user's text match themselves.
            escaped = title.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(Document.title.ilike(f"%{escaped}%", escape="\\"))
        if status == "deleted":
            stmt = stmt.where(Document.deleted_at.is_not(None))
        elif status is not None:
            stmt = stmt.where(Document.status == status, Document.deleted_at.is_(None))
        if tag is not None:
            stmt = stmt.where(
                Document.id.in_(select(DocumentTag.document_id).where(DocumentTag.tag == tag))
            )
        total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = await session.scalars(stmt.order_by(Document.id.desc()).limit(limit).offset(offset))
        return rows.all(), int(total or 0)

    async def chunks(self, session: AsyncSession, document_id: int) -> Sequence[Chunk]:
        rows = await session.scalars(
            select(Chunk).where(Chunk.document_id == document_id).order_by(Chunk.position)
        )
        return rows.all()

    async def find_by_content(
        self, session: AsyncSession, tenant_id: int, sha256: str
    ) -> Document | None:
        return await session.scalar(
            select(Document).where(
                Document.tenant_id == tenant_id, Document.content_sha256 == sha256
            )
        )

    async def tenants_holding(
        self, session: AsyncSession, sha256: str, *, except_document: int | None = None
    ) -> list[int]:
        """The tenants with a document of this content (moving legacy shared blobs only)."""
        statement = select(Document.tenant_id).where(Document.content_sha256 == sha256)
        if except_document is not None:
            statement = statement.where(Document.id != except_document)
        return sorted(set((await session.scalars(statement.distinct())).all()))

    async def tags(
        self, session: AsyncSession, document_ids: Sequence[int]
    ) -> dict[int, list[str]]:
        if not document_ids:
            return {}
        rows = await session.execute(
            select(DocumentTag.document_id, DocumentTag.tag)
            .where(DocumentTag.document_id.in_(document_ids))
            .order_by(DocumentTag.tag)
        )
        tags: dict[int, list[str]] = {i: [] for i in document_ids}
        for document_id, tag in rows:
            tags[document_id].append(tag)
        return tags

    async def set_tags(self, session: AsyncSession, document_id: int, tags: Sequence[str]) -> None:
        await session.execute(delete(DocumentTag).where(DocumentTag.document_id == document_id))
        session.add_all(DocumentTag(document_id=document_id, tag=t) for t in tags)

    def add(self, session: AsyncSession, document: Document) -> Document:
        session.add(document)
        return document

    async def get(self, session: AsyncSession, document_id: int) -> Document | None:
        return await session.get(Document, document_id)

    async def totals_per_tenant(self, session: AsyncSession) -> list[tuple[int, int]]:
        """(documents, chunks) of every tenant, deleted documents left out, tenants without
        documents included: for aggregate metrics only (no tenant is named)."""
        rows = await session.execute(
            select(func.count(Document.id), func.coalesce(func.sum(Document.chunk_count), 0))
            .select_from(Tenant)
            .outerjoin(Document, (Document.tenant_id == Tenant.id) & Document.deleted_at.is_(None))
            .group_by(Tenant.id)
        )
        return [(int(documents), int(chunks)) for documents, chunks in rows]


document_repository = DocumentRepository()
