"""Search queries. `visible_documents_statement` is the one place search visibility lives."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.authz import SENSITIVITY_LEVELS
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


_NOT_READY = ("queued", "processing", "failed", "deleted")


class SearchRepository:
    def visible_conditions(self, visibility: Visibility) -> list[ColumnElement[bool]]:
        """Conditions on ``Document`` that admit exactly the documents the visibility allows."""
        conditions: list[ColumnElement[bool]] = [
            Document.tenant_id == visibility.tenant_id,
            Document.status == "ready",
            Document.deleted_at.is_(None),
            Document.sensitivity.in_(visibility.sensitivity),
        ]
        if visibility.tags:
            conditions.append(
                Document.id.in_(
                    select(DocumentTag.document_id).where(DocumentTag.tag.in_(visibility.tags))
                )
            )
        if visibility.document_ids is not None:
            conditions.append(Document.id.in_(visibility.document_ids))
        if visibility.uploaded_after is not None:
            conditions.append(Document.created_at >= visibility.uploaded_after)
        if visibility.uploaded_before is not None:
            conditions.append(Document.created_at < visibility.uploaded_before)
        return conditions

    def visible_documents_statement(self, visibility: Visibility) -> Select[int]:
        """Ids of the tenant's ready, not deleted documents the visibility admits."""
        return select(Document.id).where(*self.visible_conditions(visibility))

    async def visible_document_ids(self, session: AsyncSession, visibility: Visibility) -> IdArray:
        """Sorted ids of the documents a search under ``visibility`` may return."""
        if not visibility.sensitivity:
            return np.empty(0, dtype=np.int64)
        rows = (await session.scalars(self.visible_documents_statement(visibility))).all()
        return np.unique(np.array(rows, dtype=np.int64))

    async def hidden_document_ids(self, session: AsyncSession, visibility: Visibility) -> IdArray:
        """Sorted ids of the tenant's documents an unfiltered search must not return: not
        ready, soft-deleted, or above the caller's sensitivity. Usually a handful, where the
        visible ones may be a hundred thousand; three index lookups, no scan."""
        assert not visibility.filtered, "filtered searches list their visible documents"
        tenant = Document.tenant_id == visibility.tenant_id
        statements = [
            select(Document.id).where(tenant, Document.status.in_(_NOT_READY)),
            select(Document.id).where(tenant, Document.deleted_at.is_not(None)),
        ]
        hidden_levels = [s for s in SENSITIVITY_LEVELS if s not in visibility.sensitivity]
        if hidden_levels:
            statements.append(
                select(Document.id).where(tenant, Document.sensitivity.in_(hidden_levels))
            )
        ids: list[int] = []
        for statement in statements:
            ids.extend((await session.scalars(statement)).all())
        return np.unique(np.array(ids, dtype=np.int64))

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
        # Two primary-key lookups instead of one join: joined, the planner may start from
        # the tenant's documents and scan them all for a handful of hits. The visibility
        # conditions still apply to each hit's document row in the same session.
        # The tenant is checked on the rows, not in SQL: there SQLite prefers the
        # (tenant_id, shard_no) index to the primary key and walks the tenant's chunks.
        chunk_rows = [
            row
            for row in await session.execute(
                select(
                    Chunk.id, Chunk.document_id, Chunk.text, Chunk.heading_path, Chunk.tenant_id
                ).where(Chunk.id.in_(list(chunk_ids)))
            )
            if row.tenant_id == visibility.tenant_id
        ]
        if not chunk_rows:
            return {}
        document_rows = await session.execute(
            select(Document.id, Document.title).where(
                Document.id.in_({row.document_id for row in chunk_rows}),
                *self.visible_conditions(visibility),
            )
        )
        titles: dict[int, str] = {row.id: row.title for row in document_rows}
        return {
            row.id: HitRow(
                row.id, row.document_id, titles[row.document_id], row.text, _heading_path(row[3])
            )
            for row in chunk_rows
            if row.document_id in titles
        }


search_repository = SearchRepository()
