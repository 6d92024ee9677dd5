"""Encryption at rest as an operator sees it: converting existing data (`enable`), re-wrapping
every tenant key under a new KEK (`rotate_kek`) and what is sealed per tenant (`status`).
Tenant-key rotation is app/crypto/rotation.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from app.crypto.repository import tenant_key_repository
from app.crypto.reseal import Converted, file_sealed, reseal_tenant, tenant_blobs
from app.jobs.runtime import Runtime
from app.kit.envelope import SEALED_TEXT
from app.kit.kek import Kek, KekError
from app.models import Chunk, Tenant
from app.search.index.erasure import shard_files

logger = logging.getLogger(__name__)

_BATCH = 500


@dataclass
class Counts:
    total: int = 0
    sealed: int = 0


@dataclass
class TenantStatus:
    tenant_id: int
    slug: str
    key: str  # "none" | the fingerprint of the KEK that wraps it
    generation: int  # of the key new data is sealed under (0: no key)
    rotating: bool  # a tenant-key rotation has not finished re-encrypting
    chunks: Counts = field(default_factory=Counts)
    files: Counts = field(default_factory=Counts)
    shards: Counts = field(default_factory=Counts)

    @property
    def complete(self) -> bool:
        sealed = all(c.sealed == c.total for c in (self.chunks, self.files, self.shards))
        return sealed and not self.rotating


async def status(runtime: Runtime) -> list[TenantStatus]:
    """Per tenant: its key's KEK, and how many chunk rows, stored files and shard files are
    sealed out of how many."""
    database = runtime.database
    report: list[TenantStatus] = []
    async with database.read_sessionmaker() as session:
        tenants = (await session.execute(select(Tenant.id, Tenant.slug).order_by(Tenant.id))).all()
        keys = {k.tenant_id: k for k in await tenant_key_repository.list_all(session)}
        for tenant_id, slug in tenants:
            row = keys.get(tenant_id)
            entry = TenantStatus(
                tenant_id,
                slug,
                row.kek_fingerprint if row else "none",
                row.generation if row else 0,
                row.retired_generation is not None if row else False,
            )
            entry.chunks.total = int(
                await session.scalar(
                    select(func.count()).select_from(Chunk).where(Chunk.tenant_id == tenant_id)
                )
                or 0
            )
            entry.chunks.sealed = int(
                await session.scalar(
                    select(func.count())
                    .select_from(Chunk)
                    .where(Chunk.tenant_id == tenant_id, Chunk.text.startswith(SEALED_TEXT))
                )
                or 0
            )
            shas = await tenant_blobs(session, tenant_id)
            for sha in shas:
                if await asyncio.to_thread(runtime.store.exists, tenant_id, sha):
                    entry.files.total += 1
                    if await asyncio.to_thread(runtime.store.is_sealed, tenant_id, sha):
                        entry.files.sealed += 1
            for shard in await asyncio.to_thread(
                shard_files, runtime.settings.index_dir, tenant_id
            ):
                entry.shards.total += 1
                entry.shards.sealed += int(await asyncio.to_thread(file_sealed, shard.path))
            report.append(entry)
    return report


async def rotate_kek(runtime: Runtime, new: Kek) -> int:
    """Re-wrap every tenant key under `new`, in one transaction (all or none); data is not
    touched. Afterwards the old KEK unwraps nothing. How many keys were re-wrapped."""
    old = runtime.keyring.kek()
    if old.fingerprint == new.fingerprint:
        raise KekError("the new KEK is the KEK in force; nothing to rotate")
    async with runtime.database.sessionmaker() as session, session.begin():
        rows = await tenant_key_repository.list_all(session)
        for row in rows:
            if row.kek_fingerprint == new.fingerprint:
                continue  # re-wrapped by an earlier, interrupted rotation? not possible: one tx
            tenant_id, fingerprint = row.tenant_id, row.kek_fingerprint
            raw = old.unwrap(tenant_id, row.wrapped_key, fingerprint, row.generation)
            retired: bytes | None = None
            if row.retired_key is not None and row.retired_generation is not None:
                # A tenant-key rotation in progress: its retired key moves to the new KEK too.
                retired_raw = old.unwrap(
                    tenant_id, row.retired_key, fingerprint, row.retired_generation
                )
                retired = new.wrap(tenant_id, retired_raw, row.retired_generation)
            tenant_key_repository.rewrap(
                row, new.wrap(tenant_id, raw, row.generation), new.fingerprint, retired
            )
    runtime.keyring.use_kek(new)
    return len(rows)


async def enable(runtime: Runtime, *, progress: Callable[[str], None] | None = None) -> Converted:
    """Seal every tenant's existing plaintext: chunk rows, stored originals and shard files.
    Each piece is converted on its own and already sealed pieces are skipped, so an
    interrupted run is finished by running it again."""
    if not runtime.keyring.enabled:
        raise KekError("set CAIRN_ENCRYPTION__ENABLED=true first: new data would stay plaintext")
    done = Converted()
    async with runtime.database.read_sessionmaker() as session:
        tenants = (await session.execute(select(Tenant.id, Tenant.slug).order_by(Tenant.id))).all()
    for tenant_id, slug in tenants:
        key = await runtime.keyring.for_writing(tenant_id)
        assert key is not None, "encryption is enabled"
        done.add(await reseal_tenant(runtime, tenant_id, key))
        if progress is not None:
            progress(f"{slug}: sealed")
    return done
