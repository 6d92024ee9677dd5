"""Deleting a tenant, optionally crypto-shredding it first.

With `shred`, the tenant's wrapped data key is deleted and that transaction committed before
anything else is touched: from then on every sealed byte of the tenant — originals, shard
files, chunk text, cached answers, and the copies of them in backups and disk snapshots taken
earlier — is ciphertext under a key that no longer exists in this database. A crash after that
commit leaves rows and files behind that nobody can read, and running the deletion again
removes them. Only then are the rows deleted (one transaction; the tenant's tables cascade) and
the tenant's file and shard folders and cache entries removed.

What it cannot reach: data written in plaintext (before encryption was enabled and not yet
converted by `cairn encryption enable`), and a backup of the database taken earlier, which
still holds the wrapped key — that key unwraps with the KEK, so a backup is only shredded once
the KEK it was taken under is gone too (`cairn encryption rotate-kek`, then destroy the old
KEK file). The tenant's audit entries stay: they hold ids and enums, not content.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass

from app.audit.service import audit_service
from app.backup.tombstone_file import tenant_digest
from app.backup.tombstones import tombstone_service
from app.crypto.repository import tenant_key_repository
from app.jobs.runtime import Runtime
from app.kit.actor import SystemActor
from app.kit.authz import domain_of, revoke_domain
from app.kit.errors import ResourceNotFound
from app.kit.principal import Principal
from app.search.index.layout import tenant_dir
from app.search.shard_cache import ShardCache
from app.tenants.repository import tenant_repository

logger = logging.getLogger(__name__)

# Cache entries are keyed `<kind>:<tenant id>:...` (app/chat/answer_cache.py,
# app/search/embedding_cache.py).
_CACHE_KINDS = ("answer", "query_embedding")


@dataclass(frozen=True)
class TenantDeletion:
    tenant_id: int
    slug: str
    shredded: bool
    cache_entries: int


async def delete_tenant(
    runtime: Runtime,
    actor: Principal | SystemActor,
    slug: str,
    *,
    shred: bool,
    shard_cache: ShardCache | None = None,
) -> TenantDeletion:
    """Delete the tenant with every row, file and cache entry of it (see the module docstring
    for the order, which a shred depends on)."""
    database = runtime.database
    async with database.sessionmaker() as session, session.begin():
        tenant = await tenant_repository.get_by_slug(session, slug)
        if tenant is None:
            raise ResourceNotFound(f"Tenant {slug!r} not found")
        tenant_id = tenant.id
        if shred:
            had_key = await tenant_key_repository.destroy(session, tenant_id)
            await audit_service.record(
                session,
                action="tenant.shred",
                actor=actor,
                target_type="tenant",
                target_id=tenant_id,
                details={"key_destroyed": had_key},
            )
    # The shred is committed: forget the key in this process before deleting anything else.
    runtime.keyring.forget(tenant_id)
    if shard_cache is not None:
        shard_cache.forget(tenant_id)
    async with database.sessionmaker() as session, session.begin():
        tenant = await tenant_repository.get(session, tenant_id)
        if tenant is not None:
            await revoke_domain(session, domain_of(tenant_id))
            # A backup taken before this deletion must not bring the tenant back on restore
            # (app/backup/restore.py deletes it again, shredding its key).
            await tombstone_service.record(
                session,
                "tenant",
                tenant_id=tenant_id,
                subject_id=tenant_id,
                digest=tenant_digest(tenant_id, tenant.slug),
            )
            await session.delete(tenant)
            await audit_service.record(
                session,
                action="tenant.delete",
                actor=actor,
                target_type="tenant",
                target_id=tenant_id,
                details={"shred": shred},
            )
    settings = runtime.settings
    await asyncio.to_thread(shutil.rmtree, runtime.store.root / f"t{tenant_id}", ignore_errors=True)
    await asyncio.to_thread(
        shutil.rmtree, tenant_dir(settings.index_dir, tenant_id), ignore_errors=True
    )
    removed = 0
    for kind in _CACHE_KINDS:
        removed += await runtime.cache.delete_where(f"{kind}:{tenant_id}:", lambda _: True)
    # Deleted rows leave no copy in SQLite's write-ahead log (secure_delete covers the file).
    await database.checkpoint_wal()
    logger.info("tenant %s deleted (shred: %s)", tenant_id, shred)
    return TenantDeletion(tenant_id, slug, shred, removed)
