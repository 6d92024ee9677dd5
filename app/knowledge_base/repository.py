"""The SQL of knowledge-base settings and re-parse jobs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.documents.status import DocumentStatus
from app.models import Document, Job, TenantSettings
from app.models.base import utcnow


def _object(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# The sections of a knowledge base's settings, each a JSON object in its own column.
SECTIONS = ("chunking", "retrieval", "bm25")


class KnowledgeBaseRepository:
    async def stored(self, session: AsyncSession, tenant_id: int) -> dict[str, dict[str, Any]]:
        """Per section (`SECTIONS`), the keys the knowledge base set itself."""
        row = await session.get(TenantSettings, tenant_id)
        return {
            section: _object(getattr(row, section) if row is not None else None)
            for section in SECTIONS
        }

    async def stored_stemmer(self, session: AsyncSession, tenant_id: int) -> str | None:
        """The BM25 stemmer the knowledge base chose (None: the server's). Read by the index
        writer on every write, under the tenant's writer lock: one primary-key read."""
        raw = await session.scalar(
            select(TenantSettings.bm25).where(TenantSettings.tenant_id == tenant_id)
        )
        value = _object(raw).get("stemmer")
        return value if isinstance(value, str) else None

    async def store(
        self,
        session: AsyncSession,
        tenant_id: int,
        sections: dict[str, dict[str, Any]],
        *,
        user_id: int | None,
    ) -> None:
        row = await session.get(TenantSettings, tenant_id)
        if row is None:
            row = TenantSettings(tenant_id=tenant_id)
            session.add(row)
        for section in SECTIONS:
            setattr(
                row,
                section,
                json.dumps(sections.get(section, {}), ensure_ascii=False, sort_keys=True),
            )
        row.updated_at = utcnow()
        row.updated_by = user_id

    def _reparsable(self, tenant_id: int, document_ids: Sequence[int] | None) -> list[Any]:
        conditions = [
            Document.tenant_id == tenant_id,
            Document.status == DocumentStatus.READY,
            Document.deleted_at.is_(None),
        ]
        if document_ids is not None:
            conditions.append(Document.id.in_(list(document_ids)))
        return conditions

    async def count_reparsable(
        self, session: AsyncSession, tenant_id: int, document_ids: Sequence[int] | None
    ) -> int:
        """How many of the tenant's documents (all, or these) a re-parse would take."""
        found = await session.scalar(
            select(func.count(Document.id)).where(*self._reparsable(tenant_id, document_ids))
        )
        return int(found or 0)

    async def tenant_document_ids(
        self, session: AsyncSession, tenant_id: int, document_ids: Sequence[int]
    ) -> set[int]:
        """Which of these ids are documents of the tenant (not purged)."""
        rows = await session.scalars(
            select(Document.id).where(
                Document.tenant_id == tenant_id, Document.id.in_(list(document_ids))
            )
        )
        return set(rows)

    async def next_reparsable(
        self,
        session: AsyncSession,
        tenant_id: int,
        document_ids: Sequence[int] | None,
        *,
        after: int,
    ) -> Document | None:
        """The re-parse's next document, by id: a resumed job goes on where it stopped."""
        return await session.scalar(
            select(Document)
            .where(*self._reparsable(tenant_id, document_ids), Document.id > after)
            .order_by(Document.id)
            .limit(1)
        )

    async def tenant_job(self, session: AsyncSession, tenant_id: int, job_id: int) -> Job | None:
        """One of the tenant's jobs (None for another tenant's: never revealed)."""
        job = await session.get(Job, job_id)
        return job if job is not None and job.tenant_id == tenant_id else None


knowledge_base_repository = KnowledgeBaseRepository()
