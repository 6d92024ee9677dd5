"""The SQL of a hard delete: what a document left behind in every table, and removing it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.crypto.chunks import open_chunk_text, open_chunk_vector
from app.jobs.repository import job_repository
from app.kit.envelope import DataKey
from app.models import (
    ChatCitation,
    ChatMessage,
    ChatMessageSource,
    ChatSession,
    Chunk,
    Document,
    Tenant,
)

# What a session is called once the question it was named after is purged.
PURGED_SESSION_TITLE = "Chat"


@dataclass(frozen=True)
class ChunkTrace:
    """A document's chunks as the purge needs them: ids, words and vectors for verification."""

    ids: np.ndarray
    texts: list[str]
    vectors: np.ndarray  # float32 (n, dim); (0, 0) when there are none


class PurgeRepository:
    async def chunk_trace(
        self, session: AsyncSession, document_id: int, key: DataKey | None = None
    ) -> ChunkTrace:
        """The document's chunks (sealed text and vectors opened with the tenant's `key`)."""
        rows = (
            await session.execute(
                select(Chunk.id, Chunk.text, Chunk.embedding, Chunk.tenant_id, Chunk.position)
                .where(Chunk.document_id == document_id)
                .order_by(Chunk.id)
            )
        ).all()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vectors = (
            np.vstack(
                [
                    np.frombuffer(
                        open_chunk_vector(key, r[3], document_id, r[4], r[2]), dtype="<f4"
                    )
                    for r in rows
                ]
            ).astype(np.float32)
            if rows
            else np.zeros((0, 0), dtype=np.float32)
        )
        texts = [open_chunk_text(key, r[3], document_id, r[4], r[1]) for r in rows]
        return ChunkTrace(ids, texts, vectors)

    async def answers_from(self, session: AsyncSession, document_id: int) -> list[int]:
        """Assistant messages whose prompt held, or whose citations name, the document."""
        sourced = select(ChatMessageSource.message_id).where(
            ChatMessageSource.document_id == document_id
        )
        cited = select(ChatCitation.message_id).where(ChatCitation.document_id == document_id)
        rows = await session.scalars(sourced.union(cited))
        return sorted(int(i) for i in rows)

    async def delete_turns(self, session: AsyncSession, answer_ids: Sequence[int]) -> int:
        """Delete these answers with the questions they answered (the user's message just
        before each); sessions left empty go too, and a session named after a deleted
        question is renamed. How many messages were deleted."""
        if not answer_ids:
            return 0
        answers = (
            await session.execute(
                select(ChatMessage.id, ChatMessage.session_id).where(
                    ChatMessage.id.in_(list(answer_ids))
                )
            )
        ).all()
        doomed: set[int] = set()
        sessions: set[int] = set()
        for answer_id, session_id in answers:
            doomed.add(answer_id)
            sessions.add(session_id)
            question = await session.scalar(
                select(func.max(ChatMessage.id)).where(
                    ChatMessage.session_id == session_id,
                    ChatMessage.id < answer_id,
                    ChatMessage.role == "user",
                )
            )
            if question is not None:
                doomed.add(int(question))
        firsts = {
            session_id: first
            for session_id, first in (
                await session.execute(
                    select(ChatMessage.session_id, func.min(ChatMessage.id))
                    .where(ChatMessage.session_id.in_(sessions))
                    .group_by(ChatMessage.session_id)
                )
            ).all()
        }
        await session.execute(delete(ChatMessage).where(ChatMessage.id.in_(doomed)))
        renamed = [s for s, first in firsts.items() if first in doomed]
        if renamed:
            # The title is the start of the first question: it may quote the document.
            await session.execute(
                update(ChatSession)
                .where(ChatSession.id.in_(renamed))
                .values(title=PURGED_SESSION_TITLE)
            )
        empty = select(ChatMessage.id).where(ChatMessage.session_id == ChatSession.id)
        await session.execute(
            delete(ChatSession).where(ChatSession.id.in_(sessions), ~empty.exists())
        )
        return len(doomed)

    async def delete_contents(
        self, session: AsyncSession, document_id: int, *, jobs: bool = True
    ) -> int:
        """Delete the document's chunks, its remaining chat references and (`jobs`) its jobs
        (the row itself stays until the purge is verified); how many chunk rows were deleted."""
        chunks = await session.execute(delete(Chunk).where(Chunk.document_id == document_id))
        await session.execute(
            delete(ChatMessageSource).where(ChatMessageSource.document_id == document_id)
        )
        await session.execute(delete(ChatCitation).where(ChatCitation.document_id == document_id))
        if jobs:
            await job_repository.delete_for_document(session, document_id)
        return int(chunks.rowcount or 0)  # type: ignore[attr-defined]

    async def delete_row(self, session: AsyncSession, document_id: int) -> None:
        """Delete the document row (its tags go with it): title and file name are gone."""
        await session.execute(delete(Document).where(Document.id == document_id))

    async def shares_content(
        self, session: AsyncSession, tenant_id: int, sha256: str, document_id: int
    ) -> bool:
        """Whether another document of the same tenant holds the same stored file. Files are
        kept per tenant (app/kit/storage.py), so no other tenant's documents are asked about:
        a receipt could otherwise tell that another tenant holds the same bytes."""
        found = await session.scalar(
            select(Document.id)
            .where(
                Document.tenant_id == tenant_id,
                Document.content_sha256 == sha256,
                Document.id != document_id,
            )
            .limit(1)
        )
        return found is not None

    async def leftovers(
        self,
        session: AsyncSession,
        document_id: int,
        chunk_ids: Sequence[int],
        *,
        jobs: bool = True,
    ) -> dict[str, int]:
        """Rows that still name the document's contents, per table (all 0 once they are
        deleted; the document row itself goes last, with the receipt's completion). `jobs`:
        its jobs count too (not when only a replaced version is erased: the document's
        ingestion job is running)."""
        ids = list(chunk_ids)
        counts = {
            "chunks": select(func.count())
            .select_from(Chunk)
            .where(or_(Chunk.document_id == document_id, Chunk.id.in_(ids or [-1]))),
            "chat_message_sources": select(func.count())
            .select_from(ChatMessageSource)
            .where(ChatMessageSource.document_id == document_id),
            "chat_citations": select(func.count())
            .select_from(ChatCitation)
            .where(
                or_(ChatCitation.document_id == document_id, ChatCitation.chunk_id.in_(ids or [-1]))
            ),
        }
        left = {name: int(await session.scalar(stmt) or 0) for name, stmt in counts.items()}
        if jobs:
            left["jobs"] = await job_repository.count_for_document(session, document_id)
        return left

    async def expired(
        self, session: AsyncSession, *, now: datetime, default_days: int
    ) -> list[tuple[int, int]]:
        """(tenant id, document id) of soft-deleted documents past their tenant's retention
        window and not being purged yet, oldest first."""
        rows = await session.execute(
            select(Document.tenant_id, Document.id, Document.deleted_at, Tenant.retention_days)
            .join(Tenant, Tenant.id == Document.tenant_id)
            .where(Document.deleted_at.is_not(None), Document.status != "purging")
            .order_by(Document.deleted_at)
        )
        due: list[tuple[int, int]] = []
        for tenant_id, document_id, deleted_at, days in rows:
            window = timedelta(days=default_days if days is None else days)
            if deleted_at is not None and deleted_at + window <= now:
                due.append((int(tenant_id), int(document_id)))
        return due


purge_repository = PurgeRepository()
