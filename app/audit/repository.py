"""Audit queries: the only code that writes audit_entries and audit_chain_heads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.actor import Actor, UserActor
from app.models import AuditChainHead, AuditEntry, Membership, User

# An export reads this many entries per query.
_EXPORT_BATCH = 500
SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


@dataclass(frozen=True)
class AuditFilter:
    # A part of the action's name, matched in any case ("purge" finds document.purge_request).
    action: str | None = None
    actor: Actor | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditRepository:
    async def lock_head(self, session: AsyncSession, chain: str) -> AuditChainHead | None:
        # FOR UPDATE serialises appends to one chain on PostgreSQL; SQLite transactions are
        # already serialised by BEGIN IMMEDIATE (app/kit/db.py).
        return await session.scalar(
            select(AuditChainHead).where(AuditChainHead.chain == chain).with_for_update()
        )

    def add_head(self, session: AsyncSession, head: AuditChainHead) -> None:
        session.add(head)

    def add(self, session: AsyncSession, entry: AuditEntry) -> None:
        session.add(entry)

    def _tenant_statement(self, tenant_id: int, flt: AuditFilter) -> Select[AuditEntry]:
        stmt = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
        if flt.action:
            stmt = stmt.where(
                func.lower(AuditEntry.action).contains(flt.action.lower(), autoescape=True)
            )
        if isinstance(flt.actor, UserActor):
            stmt = stmt.where(AuditEntry.actor_id == flt.actor.user_id)
        elif flt.actor is not None:
            stmt = stmt.where(
                AuditEntry.actor_id.is_(None), AuditEntry.actor_name == flt.actor.stored_name
            )
        if flt.target_type:
            stmt = stmt.where(AuditEntry.target_type == flt.target_type)
        if flt.target_id:
            stmt = stmt.where(AuditEntry.target_id == flt.target_id)
        if flt.since:
            stmt = stmt.where(AuditEntry.created_at >= flt.since)
        if flt.until:
            stmt = stmt.where(AuditEntry.created_at < flt.until)
        return stmt

    async def list_for_tenant(
        self, session: AsyncSession, tenant_id: int, flt: AuditFilter, *, limit: int, offset: int
    ) -> tuple[Sequence[AuditEntry], int]:
        stmt = self._tenant_statement(tenant_id, flt)
        total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = await session.scalars(
            stmt.order_by(AuditEntry.seq.desc()).limit(limit).offset(offset)
        )
        return list(rows), int(total or 0)

    async def tenant_batches(
        self, session_for: SessionFactory, tenant_id: int, flt: AuditFilter, *, upto: int
    ) -> AsyncIterator[Sequence[AuditEntry]]:
        """Every matching entry of the tenant up to seq `upto`, oldest first, in batches, each
        read in a short session of its own (keyset pagination: bounded memory, and no session
        held open while a slow client reads an export)."""
        after = 0
        while True:
            async with session_for() as session:
                rows = (
                    await session.scalars(
                        self._tenant_statement(tenant_id, flt)
                        .where(AuditEntry.seq > after, AuditEntry.seq <= upto)
                        .order_by(AuditEntry.seq)
                        .limit(_EXPORT_BATCH)
                    )
                ).all()
            if not rows:
                return
            yield rows
            after = rows[-1].seq

    async def members_among(
        self, session: AsyncSession, tenant_id: int, user_ids: Collection[int]
    ) -> set[int]:
        """Those of the users who hold a role in the tenant now."""
        found: set[int] = set()
        wanted = sorted(user_ids)
        for start in range(0, len(wanted), 500):  # bounded IN lists
            rows = await session.scalars(
                select(Membership.user_id).where(
                    Membership.tenant_id == tenant_id,
                    Membership.user_id.in_(wanted[start : start + 500]),
                )
            )
            found.update(rows)
        return found

    async def last_actor(
        self,
        session: AsyncSession,
        tenant_id: int,
        *,
        action: str,
        target_type: str,
        target_id: str,
    ) -> tuple[int | None, str | None] | None:
        """(actor_id, actor_name) of the tenant's newest entry of this action on this target."""
        row = (
            await session.execute(
                select(AuditEntry.actor_id, AuditEntry.actor_name)
                .where(
                    AuditEntry.tenant_id == tenant_id,
                    AuditEntry.action == action,
                    AuditEntry.target_type == target_type,
                    AuditEntry.target_id == target_id,
                )
                .order_by(AuditEntry.seq.desc())
                .limit(1)
            )
        ).first()
        return None if row is None else (row[0], row[1])

    async def chain_names(self, session: AsyncSession) -> list[str]:
        heads = await session.scalars(select(AuditChainHead.chain).order_by(AuditChainHead.chain))
        return list(heads)

    async def head(self, session: AsyncSession, chain: str) -> AuditChainHead | None:
        return await session.get(AuditChainHead, chain)

    async def heads(self, session: AsyncSession) -> list[AuditChainHead]:
        rows = await session.scalars(select(AuditChainHead).order_by(AuditChainHead.chain))
        return list(rows)

    async def entry_hash(self, session: AsyncSession, chain: str, seq: int) -> str | None:
        return await session.scalar(
            select(AuditEntry.entry_hash).where(AuditEntry.chain == chain, AuditEntry.seq == seq)
        )

    async def iter_chain(
        self, session: AsyncSession, chain: str, batch: int = 1000
    ) -> AsyncIterator[Sequence[AuditEntry]]:
        """The chain's entries in seq order, in batches (keyset pagination, bounded memory)."""
        after = 0
        while True:
            rows = (
                await session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.chain == chain, AuditEntry.seq > after)
                    .order_by(AuditEntry.seq)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return
            yield rows
            after = rows[-1].seq
            for row in rows:  # keep the identity map (and memory) flat on long chains
                session.expunge(row)

    async def acted_by(
        self, session: AsyncSession, user_id: int, *, limit: int
    ) -> list[tuple[int, str, str | None]]:
        """(id, entry_hash, seal) of up to `limit` entries whose readable actor is the user."""
        rows = await session.execute(
            select(AuditEntry.id, AuditEntry.entry_hash, AuditEntry.seal)
            .where(AuditEntry.actor_id == user_id)
            .order_by(AuditEntry.id)
            .limit(limit)
        )
        return [(entry_id, hashed, seal) for entry_id, hashed, seal in rows]

    async def blank_actor(self, session: AsyncSession, seals: Mapping[int, str | None]) -> None:
        """Blank the readable actor of these entries (by id) and give each its new seal."""
        if seals:
            # ORM bulk UPDATE by primary key: one executemany.
            await session.execute(
                update(AuditEntry),
                [
                    {"id": entry_id, "actor_id": None, "actor_name": None, "seal": seal}
                    for entry_id, seal in seals.items()
                ],
            )

    async def readable_commitments(
        self, session: AsyncSession, commitments: Collection[str]
    ) -> set[str]:
        """Those of the commitments that some entry still shows with a readable actor."""
        found: set[str] = set()
        wanted = sorted(commitments)
        for start in range(0, len(wanted), 500):  # bounded IN lists
            rows = await session.scalars(
                select(AuditEntry.actor_commitment)
                .where(
                    AuditEntry.actor_commitment.in_(wanted[start : start + 500]),
                    or_(AuditEntry.actor_id.is_not(None), AuditEntry.actor_name.is_not(None)),
                )
                .distinct()
            )
            found.update(c for c in rows if c is not None)
        return found

    async def accounts(self, session: AsyncSession) -> list[tuple[int, str]]:
        """(id, username) of every account: what actor commitments are made of."""
        rows = await session.execute(select(User.id, User.username))
        return [(user_id, username) for user_id, username in rows]


audit_repository = AuditRepository()
