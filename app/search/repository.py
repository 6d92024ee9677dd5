"""Search queries. `visible_documents_statement` is the one place search visibility lives."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Chunk, Document, DocumentTag, IndexShard
from app.search.visibility import Visibility

IdArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class HitRow:
    chunk_id: int
    document_id: int
    title: str
    text: str
    heading_path: tuple[str, ...]


def _heading_path(raw: str | None) -> tuple[str, ...]:
    try:
        value = json.loads(raw or "[]")
    except ValueError:
        return ()
    return tuple(str(part) for part in value) if isinstance(value, list) else ()


class SearchRepository:
    def visible_documents_statement(self, visibility: Visibility) -> Select[int]:
        """Ids of the tenant's ready, not deleted documents the visibility admits."""
        stmt = select(Document.id).where(
            Document.tenant_id == visibility.tenant_id,
            Document.status == "ready",
            Document.deleted_at.is_(None),
            Document.sensitivity.in_(visibility.sensitivity),
        )
        if visibility.tags:
            stmt = stmt.where(
                Document.id.in_(
                    select(DocumentTag.document_id).where(DocumentTag.tag.in_(visibility.tags))
                )
            )
        if visibility.document_ids is not None:
            stmt = stmt.where(Document.id.in_(visibility.document_ids))
        if visibility.uploaded_after is not None:
            stmt = stmt.where(Document.created_at >= visibility.uploaded_after)
        if visibility.uploaded_before is not None:
            stmt = stmt.where(Document.created_at < visibility.uploaded_before)
        return stmt

    async def visible_document_ids(self, session: AsyncSession, visibility: Visibility) -> IdArray:
        """Sorted ids of the documents a search under ``visibility`` may return."""
        if not visibility.sensitivity:
            return np.empty(0, dtype=np.int64)
        rows = await session.scalars(self.visible_documents_statement(visibility))
        return np.unique(np.fromiter(rows, dtype=np.int64))

    async def shards(self, session: AsyncSession, tenant_id: int) -> Sequence[IndexShard]:
        """The current version of every shard of the tenant."""
        rows = await session.scalars(
            select(IndexShard)
            .where(IndexShard.tenant_id == tenant_id)
            .order_by(IndexShard.shard_no, IndexShard.kind)
        )
        return rows.all()

    async def chunk_documents(
        self, session: AsyncSession, tenant_id: int, shard_no: int
    ) -> tuple[IdArray, IdArray]:
        """(chunk ids, their document ids) of the chunks written into one shard, by chunk id."""
        rows = (
            await session.execute(
                select(Chunk.id, Chunk.document_id)
                .where(Chunk.tenant_id == tenant_id, Chunk.shard_no == shard_no)
                .order_by(Chunk.id)
            )
        ).all()
        if not rows:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        pairs = np.array(rows, dtype=np.int64)
        return pairs[:, 0].copy(), pairs[:, 1].copy()

    async def hit_rows(
        self, session: AsyncSession, visibility: Visibility, chunk_ids: Sequence[int]
    ) -> dict[int, HitRow]:
        """Text and title of the given chunks, for those still visible (checked again here)."""
        if not chunk_ids:
            return {}
        visible = self.visible_documents_statement(visibility).subquery()
        rows = await session.execute(
            select(Chunk.id, Chunk.document_id, Document.title, Chunk.text, Chunk.heading_path)
            .join(Document, Document.id == Chunk.document_id)
            .where(
                Chunk.id.in_(list(chunk_ids)),
                Chunk.tenant_id == visibility.tenant_id,
                Chunk.document_id.in_(select(visible.c.id)),
            )
        )
        return {
            row.id: HitRow(row.id, row.document_id, row.title, row.text, _heading_path(row[4]))
            for row in rows
        }


search_repository = SearchRepository()
