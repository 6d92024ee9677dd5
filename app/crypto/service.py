"""Encryption at rest as an operator sees it: converting existing data (`enable`), re-wrapping
every tenant key under a new KEK (`rotate_kek`) and what is sealed per tenant (`status`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.crypto.chunks import seal_chunk_headings, seal_chunk_text, seal_chunk_vector
from app.crypto.repository import tenant_key_repository
from app.jobs.runtime import Runtime
from app.kit.envelope import TEXT_PREFIX, DataKey, is_sealed, shard_sealer
from app.kit.kek import Kek, KekError
from app.models import Chunk, Document, Tenant
from app.search.index import load_bm25_shard, load_shard, save_bm25_shard, save_shard
from ingest.erasure import ShardFile, shard_files
from ingest.locks import tenant_index_lock

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
    chunks: Counts = field(default_factory=Counts)
    files: Counts = field(default_factory=Counts)
    shards: Counts = field(default_factory=Counts)

    @property
    def complete(self) -> bool:
        return all(c.sealed == c.total for c in (self.chunks, self.files, self.shards))


@dataclass
class Converted:
    chunks: int = 0
    files: int = 0
    shards: int = 0


def _file_sealed(path: object) -> bool:
    with open(str(path), "rb") as fh:
        return is_sealed(fh.read(16))


async def status(runtime: Runtime) -> list[TenantStatus]:
    """Per tenant: its key's KEK, and how many chunk rows, stored files and shard files are
    sealed out of how many."""
    database = runtime.database
    report: list[TenantStatus] = []
    async with database.read_sessionmaker() as session:
        tenants = (await session.execute(select(Tenant.id, Tenant.slug).order_by(Tenant.id))).all()
        keys = {
            k.tenant_id: k.kek_fingerprint for k in await tenant_key_repository.list_all(session)
        }
        for tenant_id, slug in tenants:
            entry = TenantStatus(tenant_id, slug, keys.get(tenant_id, "none"))
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
                    .where(Chunk.tenant_id == tenant_id, Chunk.text.startswith(TEXT_PREFIX))
                )
                or 0
            )
            shas = await _blobs(session, tenant_id)
            for sha in shas:
                if await asyncio.to_thread(runtime.store.exists, tenant_id, sha):
                    entry.files.total += 1
                    if await asyncio.to_thread(runtime.store.is_sealed, tenant_id, sha):
                        entry.files.sealed += 1
            for shard in await asyncio.to_thread(
                shard_files, runtime.settings.index_dir, tenant_id
            ):
                entry.shards.total += 1
                entry.shards.sealed += int(await asyncio.to_thread(_file_sealed, shard.path))
            report.append(entry)
    return report


async def _blobs(session: AsyncSession, tenant_id: int) -> list[str]:
    rows = await session.scalars(
        select(Document.content_sha256).where(Document.tenant_id == tenant_id).distinct()
    )
    return sorted(rows)


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
            raw = old.unwrap(row.tenant_id, row.wrapped_key, row.kek_fingerprint)
            tenant_key_repository.rewrap(row, new.wrap(row.tenant_id, raw), new.fingerprint)
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
        done.chunks += await _seal_chunks(runtime, tenant_id, key)
        done.files += await _seal_files(runtime, tenant_id, key)
        done.shards += await _seal_shards(runtime, tenant_id, key)
        if progress is not None:
            progress(f"{slug}: sealed")
    return done


async def _seal_chunks(runtime: Runtime, tenant_id: int, key: DataKey) -> int:
    sealed = 0
    last_id = 0
    while True:
        async with runtime.database.sessionmaker() as session, session.begin():
            rows = (
                await session.execute(
                    select(
                        Chunk.id,
                        Chunk.document_id,
                        Chunk.position,
                        Chunk.text,
                        Chunk.heading_path,
                        Chunk.embedding,
                    )
                    .where(
                        Chunk.tenant_id == tenant_id,
                        Chunk.id > last_id,
                        ~Chunk.text.startswith(TEXT_PREFIX),
                    )
                    .order_by(Chunk.id)
                    .limit(_BATCH)
                )
            ).all()
            for chunk_id, document_id, position, text, headings, vector in rows:
                # Every column in one UPDATE: a row is either plaintext or sealed, never half.
                await session.execute(
                    update(Chunk)
                    .where(Chunk.id == chunk_id)
                    .values(
                        text=seal_chunk_text(key, tenant_id, document_id, position, text),
                        heading_path=headings
                        if headings.startswith(TEXT_PREFIX)
                        else seal_chunk_headings(key, tenant_id, document_id, position, headings),
                        embedding=vector
                        if is_sealed(vector)
                        else seal_chunk_vector(key, tenant_id, document_id, position, vector),
                    )
                )
        if not rows:
            return sealed
        sealed += len(rows)
        last_id = rows[-1][0]
        # The plaintext rows are overwritten (secure_delete); clear the WAL's copies too.
        await runtime.database.checkpoint_wal()


async def _seal_files(runtime: Runtime, tenant_id: int, key: DataKey) -> int:
    async with runtime.database.read_sessionmaker() as session:
        shas = await _blobs(session, tenant_id)
    sealed = 0
    for sha in shas:
        path = runtime.store.path_for(tenant_id, sha)
        if path.exists() and await asyncio.to_thread(
            runtime.store.seal_existing, tenant_id, sha, key
        ):
            sealed += 1
    return sealed


def _seal_shard_file(tenant_id: int, shard: ShardFile, key: DataKey) -> bool:
    if _file_sealed(shard.path):
        return False
    sealer = shard_sealer(key, tenant_id, shard.kind, shard.shard_no, shard.version)
    # Same path, same version: readers that cached it keep the same content; the atomic
    # replace means a reader opening it sees the plaintext or the sealed file, never half.
    if shard.kind == "vector":
        save_shard(load_shard(shard.path), shard.path, sealer)
    else:
        save_bm25_shard(load_bm25_shard(shard.path), shard.path, sealer)
    return True


async def _seal_shards(runtime: Runtime, tenant_id: int, key: DataKey) -> int:
    root = runtime.settings.index_dir
    sealed = 0
    # Under the writer lock: no flush or purge rewrites a shard while it is converted.
    async with tenant_index_lock(runtime.database, root, tenant_id):
        for shard in await asyncio.to_thread(shard_files, root, tenant_id):
            sealed += int(await asyncio.to_thread(_seal_shard_file, tenant_id, shard, key))
    return sealed
