"""The SQL of chunk curation: a document's chunks by page, one chunk, the next position."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Chunk


class ChunkRepository:
    async def page(
        self, session: AsyncSession, document_id: int, *, limit: int, offset: int
    ) -> tuple[Sequence[Chunk], int]:
        """A document's chunks in order (staged ones of a re-parse not yet swapped in are
        not the document's yet), and how many there are."""
        shown = (Chunk.document_id == document_id, Chunk.staged.is_(False))
        total = await session.scalar(select(func.count(Chunk.id)).where(*shown))
        rows = await session.scalars(
            select(Chunk).where(*shown).order_by(Chunk.position).limit(limit).offset(offset)
        )
        return rows.all(), int(total or 0)

    async def get(self, session: AsyncSession, document_id: int, chunk_id: int) -> Chunk | None:
        """One chunk of the document (None for a chunk of any other document)."""
        chunk = await session.get(Chunk, chunk_id)
        if chunk is None or chunk.document_id != document_id or chunk.staged:
            return None
        return chunk

    async def next_position(self, session: AsyncSession, document_id: int) -> int:
        """The position after the document's last chunk (staged ones included)."""
        last = await session.scalar(
            select(func.max(Chunk.position)).where(Chunk.document_id == document_id)
        )
        return 0 if last is None else int(last) + 1

    async def set_enabled(self, session: AsyncSession, chunk_id: int, enabled: bool) -> None:
        await session.execute(update(Chunk).where(Chunk.id == chunk_id).values(enabled=enabled))


chunk_repository = ChunkRepository()
