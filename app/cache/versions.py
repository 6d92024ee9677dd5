"""A tenant's content version (`tenants.content_version`).

Every change of what a tenant's members may see bumps it, inside the transaction that makes
the change: a document becoming ready, soft-deleted, restored, purged or re-classified, and a
membership added, changed or removed. Cached answers carry the version in their key, so once
the change commits no process can find an answer computed before it.

`bump` is the last statement of its transaction on purpose: on PostgreSQL it holds the tenant
row's lock until the commit, and a transaction that takes no other lock after it cannot be
part of a deadlock through it.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Tenant


async def bump(session: AsyncSession, tenant_id: int) -> None:
    """Move the tenant's content version on, in the caller's transaction."""
    await session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(content_version=Tenant.content_version + 1)
        .execution_options(synchronize_session=False)
    )


async def current(session: AsyncSession, tenant_id: int) -> int:
    """The tenant's content version now (0 for a tenant that is gone)."""
    value = await session.scalar(select(Tenant.content_version).where(Tenant.id == tenant_id))
    return int(value or 0)
