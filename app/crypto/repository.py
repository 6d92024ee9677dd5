"""The SQL of tenant data keys (table tenant_keys): only wrapped keys ever pass through here."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Tenant, TenantKey
from app.models.base import utcnow


class TenantKeyRepository:
    async def get(
        self, session: AsyncSession, tenant_id: int, *, for_update: bool = False
    ) -> TenantKey | None:
        return await session.get(
            TenantKey, tenant_id, populate_existing=True, with_for_update=for_update or None
        )

    async def list_all(self, session: AsyncSession) -> Sequence[TenantKey]:
        return (await session.scalars(select(TenantKey).order_by(TenantKey.tenant_id))).all()

    async def tenants_without_key(self, session: AsyncSession) -> list[int]:
        rows = await session.scalars(
            select(Tenant.id)
            .where(~select(TenantKey.tenant_id).where(TenantKey.tenant_id == Tenant.id).exists())
            .order_by(Tenant.id)
        )
        return list(rows)

    def add(self, session: AsyncSession, tenant_id: int, wrapped: bytes, fingerprint: str) -> None:
        session.add(
            TenantKey(tenant_id=tenant_id, wrapped_key=wrapped, kek_fingerprint=fingerprint)
        )

    def rewrap(
        self, row: TenantKey, wrapped: bytes, fingerprint: str, retired: bytes | None = None
    ) -> None:
        row.wrapped_key, row.kek_fingerprint, row.wrapped_at = wrapped, fingerprint, utcnow()
        row.retired_key = retired

    def rotate(self, row: TenantKey, wrapped: bytes) -> None:
        """Make `wrapped` (under the same KEK) the next generation; the current key is kept
        as the retired one until the tenant is re-encrypted."""
        row.retired_key, row.retired_generation = row.wrapped_key, row.generation
        row.wrapped_key, row.generation = wrapped, row.generation + 1
        row.rotated_at = row.wrapped_at = utcnow()

    def destroy_retired(self, row: TenantKey) -> None:
        """Delete the retired key: what only it opened can no longer be read."""
        row.retired_key = row.retired_generation = None

    async def destroy(self, session: AsyncSession, tenant_id: int) -> bool:
        """Delete the tenant's wrapped key (the crypto-shred); whether there was one."""
        result = await session.execute(delete(TenantKey).where(TenantKey.tenant_id == tenant_id))
        return bool(getattr(result, "rowcount", 0))


tenant_key_repository = TenantKeyRepository()
