"""Bringing a tenant's stored data under its current data key: plaintext written before
encryption was enabled (`cairn encryption enable`) and objects sealed under a retired key
generation (a tenant-key rotation, app/crypto/rotation.py).

Chunk rows, stored originals and shard files are each converted on their own, and objects
already under the current generation are skipped, so an interrupted run is finished by running
it again. Decryption happens in memory only; files are replaced atomically.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.crypto.chunks import (
    open_chunk_headings,
    open_chunk_text,
    open_chunk_vector,
    seal_chunk_headings,
    seal_chunk_text,
    seal_chunk_vector,
)
from app.jobs.runtime import Runtime
from app.kit.envelope import DataKey, is_sealed, shard_ad, text_prefix, unseal
from app.models import Chunk, Document
from app.search.index import atomic_write_bytes
from app.search.index.erasure import ShardFile, shard_files
from app.search.index.locks import tenant_index_lock

_BATCH = 500


@dataclass
class Converted:
    chunks: int = 0
    files: int = 0
    shards: int = 0

    def add(self, other: Converted) -> None:
        self.chunks += other.chunks
        self.files += other.files
        self.shards += other.shards

    @property
    def total(self) -> int:
        return self.chunks + self.files + self.shards


def file_sealed(path: object) -> bool:
    """Whether a file is an envelope (any key generation) rather than plaintext."""
    return is_sealed(_head(path))


async def reseal_tenant(runtime: Runtime, tenant_id: int, key: DataKey) -> Converted:
    """Seal everything of the tenant not yet under `key`'s current generation; what was
    converted."""
    return Converted(
        chunks=await _chunks(runtime, tenant_id, key),
        files=await _files(runtime, tenant_id, key),
        shards=await _shards(runtime, tenant_id, key),
    )


def _not_current(tenant_id: int, key: DataKey) -> tuple[ColumnElement[bool], ...]:
    """The tenant's chunk rows not sealed under the key's current generation."""
    return (Chunk.tenant_id == tenant_id, ~Chunk.text.startswith(text_prefix(key.generation)))


async def left_over(runtime: Runtime, tenant_id: int, key: DataKey) -> Converted:
    """What of the tenant is not under `key`'s current generation (nothing, once a rotation
    may destroy the retired key)."""
    found = Converted()
    async with runtime.database.read_sessionmaker() as session:
        found.chunks = int(
            await session.scalar(
                select(func.count()).select_from(Chunk).where(*_not_current(tenant_id, key))
            )
            or 0
        )
        shas = await tenant_blobs(session, tenant_id)
    for sha in shas:
        path = runtime.store.path_for(tenant_id, sha)
        if path.exists() and not key.is_current(await asyncio.to_thread(_head, path)):
            found.files += 1
    for shard in await asyncio.to_thread(shard_files, runtime.settings.index_dir, tenant_id):
        found.shards += int(not key.is_current(await asyncio.to_thread(_head, shard.path)))
    return found


def _head(path: object) -> bytes:
    """A file's first bytes: enough for an envelope's header and key generation."""
    with open(str(path), "rb") as fh:
        return fh.read(16)


async def tenant_blobs(session: AsyncSession, tenant_id: int) -> list[str]:
    """The content hashes of the tenant's stored originals."""
    rows = await session.scalars(
        select(Document.content_sha256).where(Document.tenant_id == tenant_id).distinct()
    )
    return sorted(rows)


async def _chunks(runtime: Runtime, tenant_id: int, key: DataKey) -> int:
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
                    .where(*_not_current(tenant_id, key), Chunk.id > last_id)
                    .order_by(Chunk.id)
                    .limit(_BATCH)
                )
            ).all()
            for chunk_id, document_id, position, text, headings, vector in rows:
                at = (tenant_id, document_id, position)
                # Every column in one UPDATE: a row is under one key generation, never two.
                await session.execute(
                    update(Chunk)
                    .where(Chunk.id == chunk_id)
                    .values(
                        text=seal_chunk_text(key, *at, open_chunk_text(key, *at, text)),
                        heading_path=seal_chunk_headings(
                            key, *at, open_chunk_headings(key, *at, headings)
                        ),
                        embedding=seal_chunk_vector(key, *at, open_chunk_vector(key, *at, vector)),
                    )
                )
        if not rows:
            return sealed
        sealed += len(rows)
        last_id = rows[-1][0]
        # The old rows are overwritten (secure_delete); clear the WAL's copies too.
        await runtime.database.checkpoint_wal()


async def _files(runtime: Runtime, tenant_id: int, key: DataKey) -> int:
    async with runtime.database.read_sessionmaker() as session:
        shas = await tenant_blobs(session, tenant_id)
    sealed = 0
    for sha in shas:
        path = runtime.store.path_for(tenant_id, sha)
        if path.exists() and await asyncio.to_thread(
            runtime.store.seal_existing, tenant_id, sha, key
        ):
            sealed += 1
    return sealed


def _reseal_shard_file(tenant_id: int, shard: ShardFile, key: DataKey) -> bool:
    data = shard.path.read_bytes()
    if key.is_current(data):
        return False
    ad = shard_ad(tenant_id, shard.kind, shard.shard_no, shard.version)
    # A plaintext shard file holds exactly the bytes a sealed one seals (save_shard and
    # save_bm25_shard), so no index is rebuilt. Same path, same version: readers that cached
    # it keep the same content; the atomic replace means a reader opening it sees the old or
    # the new file, never half.
    atomic_write_bytes(shard.path, key.seal(unseal(data, key, ad), ad))
    return True


async def _shards(runtime: Runtime, tenant_id: int, key: DataKey) -> int:
    root = runtime.settings.index_dir
    sealed = 0
    # Under the writer lock: no flush or purge rewrites a shard while it is converted.
    async with tenant_index_lock(runtime.database, root, tenant_id):
        for shard in await asyncio.to_thread(shard_files, root, tenant_id):
            sealed += int(await asyncio.to_thread(_reseal_shard_file, tenant_id, shard, key))
    return sealed
