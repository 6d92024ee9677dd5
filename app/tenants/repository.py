"""Tenant and membership queries. `readable_statement` is the one place tenant visibility lives."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.principal import Principal
from app.models import Document, Membership, Tenant, User


class TenantRepository:
    def readable_statement(self, principal: Principal) -> Select[Tenant, str]:
        """Tenants the principal holds a role in, with that role."""
        return (
            select(Tenant, Membership.role)
            .join(Membership, Membership.tenant_id == Tenant.id)
            .where(Membership.user_id == principal.user_id)
        )

    async def list_readable(
        self, session: AsyncSession, principal: Principal, *, limit: int, offset: int
    ) -> tuple[list[tuple[Tenant, str]], int]:
        stmt = self.readable_statement(principal)
        total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = await session.execute(stmt.order_by(Tenant.slug).limit(limit).offset(offset))
        return [(t, r) for t, r in rows], int(total or 0)

    async def list_all(
        self, session: AsyncSession, principal: Principal, *, limit: int, offset: int
    ) -> tuple[list[tuple[Tenant, str | None]], int]:
        """Every tenant, with the principal's role where it holds one (a platform admin's view;
        the caller checks that it is one)."""
        stmt = select(Tenant, Membership.role).outerjoin(
            Membership,
            (Membership.tenant_id == Tenant.id) & (Membership.user_id == principal.user_id),
        )
        total = await session.scalar(select(func.count()).select_from(Tenant))
        rows = await session.execute(stmt.order_by(Tenant.slug).limit(limit).offset(offset))
        return [(t, r) for t, r in rows], int(total or 0)

    async def counts(
        self, session: AsyncSession, tenant_ids: Sequence[int]
    ) -> dict[int, tuple[int, int]]:
        """Members and live documents (neither soft-deleted nor being purged) per tenant."""
        if not tenant_ids:
            return {}
        members = await session.execute(
            select(Membership.tenant_id, func.count())
            .where(Membership.tenant_id.in_(tenant_ids))
            .group_by(Membership.tenant_id)
        )
        documents = await session.execute(
            select(Document.tenant_id, func.count())
            .where(
                Document.tenant_id.in_(tenant_ids),
                Document.deleted_at.is_(None),
                Document.status != "purging",
            )
            .group_by(Document.tenant_id)
        )
        by_members = {tenant_id: int(n) for tenant_id, n in members}
        by_documents = {tenant_id: int(n) for tenant_id, n in documents}
        return {t: (by_members.get(t, 0), by_documents.get(t, 0)) for t in tenant_ids}

    async def get(self, session: AsyncSession, tenant_id: int) -> Tenant | None:
        return await session.get(Tenant, tenant_id)

    async def get_by_slug(self, session: AsyncSession, slug: str) -> Tenant | None:
        return await session.scalar(select(Tenant).where(Tenant.slug == slug))

    def add(self, session: AsyncSession, tenant: Tenant) -> Tenant:
        session.add(tenant)
        return tenant

    async def membership(
        self, session: AsyncSession, tenant_id: int, user_id: int
    ) -> Membership | None:
        return await session.scalar(
            select(Membership).where(
                Membership.tenant_id == tenant_id, Membership.user_id == user_id
            )
        )

    def add_membership(self, session: AsyncSession, membership: Membership) -> Membership:
        session.add(membership)
        return membership

    async def delete_membership(self, session: AsyncSession, membership: Membership) -> None:
        await session.delete(membership)

    async def count_role(self, session: AsyncSession, tenant_id: int, role: str) -> int:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Membership)
                .where(Membership.tenant_id == tenant_id, Membership.role == role)
            )
            or 0
        )

    async def list_members(
        self, session: AsyncSession, tenant_id: int, *, limit: int, offset: int
    ) -> tuple[Sequence[tuple[User, Membership]], int]:
        stmt = (
            select(User, Membership)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.tenant_id == tenant_id)
        )
        total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = await session.execute(stmt.order_by(User.username).limit(limit).offset(offset))
        return [(u, m) for u, m in rows], int(total or 0)


tenant_repository = TenantRepository()
