"""Chunk curation: read a document's chunks, edit one's text, disable or enable it, add one.

An edit or an addition is embedded in the request and written through `Indexer.rewrite`
(take the chunk out of the shards, write its row, index it again under the tenant's writer
lock), so the new text is what search and chat find when the response returns — and the old
text is not. Disabling only flips the row: every search reads the tenant's disabled chunks
and masks them inside FAISS and BM25 (app/search/visibility.py), in every process at once.
The audit log keeps SHA-256 digests of the old and new text, never the text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import numpy as np
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.cache import versions
from app.crypto.chunks import open_chunk_headings, open_chunk_text
from app.documents.chunk_repository import chunk_repository
from app.documents.chunk_rows import sealed_chunk_values
from app.documents.chunk_schemas import ChunkCreate, ChunkRead, ChunkUpdate
from app.documents.service import document_service
from app.documents.status import DocumentStatus
from app.jobs.runtime import Runtime
from app.kit.authz import TenantAccess
from app.kit.envelope import DataKey
from app.kit.errors import Conflict, ResourceNotFound
from app.kit.pagination import Page, PageParams
from app.models import Chunk, Document
from ingest.chunking import count_tokens
from ingest.embedding import passage_text


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_read(chunk: Chunk, key: DataKey | None) -> ChunkRead:
    """A chunk as the API shows it, its sealed columns opened with the tenant's key."""
    heading_json = open_chunk_headings(
        key, chunk.tenant_id, chunk.document_id, chunk.position, chunk.heading_path
    )
    try:
        headings = json.loads(heading_json)
    except ValueError:
        headings = []
    origin = chunk.origin if chunk.origin in ("parsed", "edited", "added") else "parsed"
    return ChunkRead(
        id=chunk.id,
        position=chunk.position,
        headings=[str(h) for h in headings] if isinstance(headings, list) else [],
        text=open_chunk_text(key, chunk.tenant_id, chunk.document_id, chunk.position, chunk.text),
        enabled=chunk.enabled,
        edited=origin != "parsed",
        origin=origin,
    )


class CurationService:
    async def list_chunks(
        self,
        session: AsyncSession,
        access: TenantAccess,
        document_id: int,
        page: PageParams,
        runtime: Runtime,
    ) -> Page[ChunkRead]:
        """A visible document's chunks in order, a page at a time (404 when not visible)."""
        document = await document_service.visible(session, access, document_id)
        rows, total = await chunk_repository.page(
            session, document.id, limit=page.limit, offset=page.offset
        )
        key = await runtime.store.read_key(access.tenant_id)
        return Page(
            items=[chunk_read(c, key) for c in rows],
            total=total,
            limit=page.limit,
            offset=page.offset,
        )

    async def update_chunk(
        self,
        session: AsyncSession,
        access: TenantAccess,
        document_id: int,
        chunk_id: int,
        data: ChunkUpdate,
        runtime: Runtime,
    ) -> ChunkRead:
        """Edit a chunk's text and/or switch it on or off; in force when this returns."""
        document = await self._curatable(session, access, document_id)
        chunk = await chunk_repository.get(session, document.id, chunk_id)
        if chunk is None:
            raise ResourceNotFound("Chunk not found")
        read_key = await runtime.store.read_key(access.tenant_id)
        current = chunk_read(chunk, read_key)
        if data.text is not None and data.text != current.text:
            # The rewrite writes in transactions of its own: this one must not hold the
            # (on SQLite, only) writer meanwhile.
            await session.commit()
            await self._rewrite_text(access, document.id, current, data, runtime)
        elif data.enabled is not None and data.enabled != chunk.enabled:
            await chunk_repository.set_enabled(session, chunk.id, data.enabled)
            # Cached answers may quote the chunk (or miss it).
            await versions.bump(session, access.tenant_id)
            await audit_service.record(
                session,
                action="chunk.enable" if data.enabled else "chunk.disable",
                actor=access.principal,
                tenant_id=access.tenant_id,
                target_type="chunk",
                target_id=chunk.id,
                details={"document_id": document.id},
            )
        await session.commit()
        async with runtime.database.read_sessionmaker() as fresh:
            updated = await chunk_repository.get(fresh, document.id, current.id)
            if updated is None:
                # Re-ingested or purged meanwhile: the edit had nothing left to change.
                raise Conflict("The document was re-processed meanwhile; reload its chunks")
            return chunk_read(updated, await runtime.store.read_key(access.tenant_id))

    async def _rewrite_text(
        self,
        access: TenantAccess,
        document_id: int,
        current: ChunkRead,
        data: ChunkUpdate,
        runtime: Runtime,
    ) -> None:
        assert data.text is not None
        tenant_id = access.tenant_id
        embedder = await runtime.embedder()
        await runtime.indexer.check_embedder(tenant_id, embedder)
        vector = await self._embed(runtime, data.text, current.headings)
        write_key = await runtime.store.write_key(tenant_id)
        enabled = current.enabled if data.enabled is None else data.enabled
        origin = "added" if current.origin == "added" else "edited"
        values = sealed_chunk_values(
            write_key,
            tenant_id,
            document_id,
            current.position,
            text=data.text,
            heading_path=current.headings,
            vector=vector,
        )

        async def change(session: AsyncSession) -> None:
            await session.execute(
                update(Chunk)
                .where(Chunk.id == current.id, Chunk.document_id == document_id)
                .values(
                    **values,
                    token_count=count_tokens(data.text or ""),
                    origin=origin,
                    enabled=enabled,
                    shard_no=None,
                )
            )
            await audit_service.record(
                session,
                action="chunk.edit",
                actor=access.principal,
                tenant_id=tenant_id,
                target_type="chunk",
                target_id=current.id,
                details={
                    "document_id": document_id,
                    "sha256_before": _digest(current.text),
                    "sha256_after": _digest(data.text or ""),
                },
            )

        await runtime.indexer.rewrite(
            tenant_id, [current.id], change, embedder=embedder.name, dim=embedder.dim
        )

    async def add_chunk(
        self,
        session: AsyncSession,
        access: TenantAccess,
        document_id: int,
        data: ChunkCreate,
        runtime: Runtime,
    ) -> ChunkRead:
        """A chunk written by hand, after the document's others; searchable when this
        returns."""
        document = await self._curatable(session, access, document_id)
        await session.commit()
        tenant_id = access.tenant_id
        embedder = await runtime.embedder()
        await runtime.indexer.check_embedder(tenant_id, embedder)
        vector = await self._embed(runtime, data.text, data.headings)
        write_key = await runtime.store.write_key(tenant_id)
        created: list[int] = []

        async def change(session: AsyncSession) -> None:
            position = await chunk_repository.next_position(session, document.id)
            chunk_id = await session.scalar(
                insert(Chunk)
                .values(
                    document_id=document.id,
                    tenant_id=tenant_id,
                    position=position,
                    token_count=count_tokens(data.text),
                    shard_no=None,
                    origin="added",
                    **sealed_chunk_values(
                        write_key,
                        tenant_id,
                        document.id,
                        position,
                        text=data.text,
                        heading_path=data.headings,
                        vector=vector,
                    ),
                )
                .returning(Chunk.id)
            )
            assert chunk_id is not None
            created.append(chunk_id)
            row = await session.get(Document, document.id)
            if row is not None:
                row.chunk_count += 1
            await audit_service.record(
                session,
                action="chunk.add",
                actor=access.principal,
                tenant_id=tenant_id,
                target_type="chunk",
                target_id=chunk_id,
                details={"document_id": document.id, "sha256_after": _digest(data.text)},
            )

        await runtime.indexer.rewrite(
            tenant_id, [], change, embedder=embedder.name, dim=embedder.dim
        )
        async with runtime.database.read_sessionmaker() as fresh:
            chunk = await chunk_repository.get(fresh, document.id, created[0])
            if chunk is None:
                raise Conflict("The document was re-processed meanwhile; reload its chunks")
            return chunk_read(chunk, await runtime.store.read_key(tenant_id))

    async def _embed(self, runtime: Runtime, text: str, headings: list[str]) -> np.ndarray:
        embedder = await runtime.embedder()
        passage = passage_text(
            text, headings, heading_context=runtime.settings.embedding.heading_context
        )
        vectors = await asyncio.to_thread(embedder.embed_passages, [passage])
        return np.asarray(vectors[0], dtype=np.float32)

    async def _curatable(
        self, session: AsyncSession, access: TenantAccess, document_id: int
    ) -> Document:
        """A visible document whose chunks may change now: ready and not deleted (409)."""
        document = await document_service.visible(session, access, document_id)
        if document.deleted_at is not None:
            raise Conflict("The document is deleted; restore it before changing its chunks")
        if document.status != DocumentStatus.READY:
            raise Conflict(
                f"The document is {document.status}; its chunks can change once it is ready"
            )
        return document


curation_service = CurationService()
