"""The SQL of `index_shards`: which version of each shard file is current. Only the index
package writes it (the writer records new versions, erasure rewritten ones, a rebuild starts
over); readers (the shard cache, purge verification, compaction) ask it what is current."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session as SyncSession

from app.models import IndexShard

# (kind, shard_no) -> current version
Versions = dict[tuple[str, int], int]


class ShardRepository:
    async def vector_shards(self, session: AsyncSession, tenant_id: int) -> list[IndexShard]:
        """The tenant's vector shards by number (the last one is the open one)."""
        rows = await session.scalars(
            select(IndexShard)
            .where(IndexShard.tenant_id == tenant_id, IndexShard.kind == "vector")
            .order_by(IndexShard.shard_no)
        )
        return list(rows)

    async def shard_numbers(
        self, session: AsyncSession, tenant_id: int, kind: str, *, after: int = -1
    ) -> list[int]:
        """The numbers of the tenant's shards of this kind above `after`, in order."""
        rows = await session.scalars(
            select(IndexShard.shard_no)
            .where(
                IndexShard.tenant_id == tenant_id,
                IndexShard.kind == kind,
                IndexShard.shard_no > after,
            )
            .order_by(IndexShard.shard_no)
        )
        return list(rows)

    async def count(self, session: AsyncSession, tenant_id: int, kind: str) -> int:
        """How many shards of this kind the tenant has."""
        found = await session.scalar(
            select(func.count(IndexShard.id)).where(
                IndexShard.tenant_id == tenant_id, IndexShard.kind == kind
            )
        )
        return int(found or 0)

    def shards_blocking(self, session: SyncSession, tenant_id: int) -> Sequence[IndexShard]:
        """Every shard row of the tenant, on a synchronous session (the shard cache's reads)."""
        rows = session.scalars(
            select(IndexShard)
            .where(IndexShard.tenant_id == tenant_id)
            .order_by(IndexShard.shard_no, IndexShard.kind)
        )
        return rows.all()

    async def versions(self, session: AsyncSession, tenant_id: int) -> Versions:
        """The current version of each of the tenant's shard files."""
        rows = await session.scalars(select(IndexShard).where(IndexShard.tenant_id == tenant_id))
        return {(s.kind, s.shard_no): s.version for s in rows}

    async def all_versions(self, session: AsyncSession) -> dict[int, Versions]:
        """Every tenant's current versions (compaction)."""
        current: dict[int, Versions] = {}
        for row in (await session.scalars(select(IndexShard))).all():
            current.setdefault(row.tenant_id, {})[(row.kind, row.shard_no)] = row.version
        return current

    async def highest_version(self, session: AsyncSession, tenant_id: int) -> int:
        """The highest version any of the tenant's shards has reached (0: none)."""
        found = await session.scalar(
            select(func.max(IndexShard.version)).where(IndexShard.tenant_id == tenant_id)
        )
        return int(found or 0)

    async def record(
        self,
        session: AsyncSession,
        tenant_id: int,
        kind: str,
        shard_no: int,
        *,
        version: int,
        size: int,
        embedder: str | None = None,
        dim: int | None = None,
        create: bool = True,
    ) -> bool:
        """Make `version` (holding `size` entries) the shard's current one, creating its row
        when `create`; whether a row was written."""
        row = await session.scalar(
            select(IndexShard).where(
                IndexShard.tenant_id == tenant_id,
                IndexShard.kind == kind,
                IndexShard.shard_no == shard_no,
            )
        )
        if row is None:
            if not create:
                return False
            row = IndexShard(tenant_id=tenant_id, kind=kind, shard_no=shard_no)
            session.add(row)
        row.version, row.size = version, size
        if embedder is not None:
            row.embedder, row.dim = embedder, dim
        return True

    async def forget_tenant(self, session: AsyncSession, tenant_id: int) -> None:
        """Drop every shard row of the tenant (a rebuild writes them anew)."""
        await session.execute(delete(IndexShard).where(IndexShard.tenant_id == tenant_id))


shard_repository = ShardRepository()
