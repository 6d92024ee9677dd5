"""Tenant and membership queries. `readable_statement` is the one place tenant visibility lives."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.principal import Principal
from app.models import Membership, Tenant, User


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
