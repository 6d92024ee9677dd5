"""Re-parse: chunk and embed a knowledge base's documents again with its current settings.

One job per request (JobKind.REPARSE), documents in id order, `done` counted as it goes and
the last finished document kept in the job's payload, so a retried job resumes. For each
document the new chunks are written *staged* — hidden from every search — and indexed; then
one transaction deletes the old rows and un-stages the new ones, and only after that are the
old chunks taken out of the shards. A search therefore answers from the old chunks until the
document's new ones are in, and never from both or neither.

Curated chunks (edited or added by a person) survive only when the request said
`keep_curated`; then disabled text stays disabled where a new chunk has the same text.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.cache import versions
from app.crypto.chunks import open_chunk_text
from app.documents.chunk_repository import chunk_repository
from app.documents.chunk_rows import sealed_chunk_values
from app.documents.status import DocumentStatus
from app.jobs.runtime import Runtime
from app.kit.envelope import DataKey
from app.knowledge_base.repository import knowledge_base_repository
from app.knowledge_base.service import knowledge_base_service
from app.models import Chunk, Document, Job
from app.search.index.erasure import remove_chunks
from ingest.chunking import chunk_document
from ingest.embedding import Embedder, passage_text
from ingest.parsers import ParseError, parse

logger = logging.getLogger(__name__)


async def run_reparse(runtime: Runtime, job: Job) -> None:
    """Work through the job's documents from where it stopped."""
    assert job.tenant_id is not None, "a re-parse names its tenant"
    tenant_id = job.tenant_id
    payload: dict[str, Any] = json.loads(job.payload or "{}")
    document_ids = payload.get("document_ids")
    keep_curated = bool(payload.get("keep_curated"))
    embedder = await runtime.embedder()
    await runtime.indexer.check_embedder(tenant_id, embedder)
    while True:
        async with runtime.database.read_sessionmaker() as session:
            document = await knowledge_base_repository.next_reparsable(
                session, tenant_id, document_ids, after=int(payload.get("after", 0))
            )
        if document is None:
            return
        try:
            await reparse_document(runtime, embedder, document, keep_curated=keep_curated)
        except ParseError as exc:
            # The file parsed once; if it no longer does (a changed parser), the document keeps
            # its old chunks rather than losing them.
            logger.warning("re-parse of document %s kept its chunks: %s", document.id, exc.code)
        payload["after"] = document.id
        async with runtime.database.sessionmaker() as session, session.begin():
            await session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(payload=json.dumps(payload), done=Job.done + 1)
            )


async def reparse_document(
    runtime: Runtime, embedder: Embedder, document: Document, *, keep_curated: bool
) -> int:
    """Replace one document's chunks with freshly made ones; how many it has now."""
    tenant_id = document.tenant_id
    settings = runtime.settings
    async with runtime.database.read_sessionmaker() as session:
        config = await knowledge_base_service.chunking_config(session, tenant_id, settings)
    key = await runtime.store.read_key(tenant_id)
    data = await asyncio.to_thread(runtime.store.read, tenant_id, document.content_sha256, key)
    parsed = await asyncio.to_thread(parse, data, document.filename, settings.parse_limits)
    chunks = await asyncio.to_thread(chunk_document, parsed, config)
    if not chunks:
        return document.chunk_count
    heading_context = settings.embedding.heading_context
    batch = settings.worker.embed_batch
    parts = []
    for start in range(0, len(chunks), batch):
        texts = [
            passage_text(c.text, c.heading_path, heading_context=heading_context)
            for c in chunks[start : start + batch]
        ]
        parts.append(await asyncio.to_thread(embedder.embed_passages, texts))
    vectors = np.vstack(parts).astype(np.float32, copy=False)
    write_key = await runtime.store.write_key(tenant_id)
    async with runtime.database.sessionmaker() as session, session.begin():
        if not await _still_ready(session, document.id):
            return 0
        # A killed attempt's staged chunks: dropped here, and out of the shards below.
        leftover = list(
            await session.scalars(
                select(Chunk.id).where(Chunk.document_id == document.id, Chunk.staged.is_(True))
            )
        )
        if leftover:
            await session.execute(delete(Chunk).where(Chunk.id.in_(leftover)))
        first = await chunk_repository.next_position(session, document.id)
        rows = [
            {
                "document_id": document.id,
                "tenant_id": tenant_id,
                "position": first + i,
                "token_count": c.token_count,
                "shard_no": None,
                "staged": True,
                **sealed_chunk_values(
                    write_key,
                    tenant_id,
                    document.id,
                    first + i,
                    text=c.text,
                    heading_path=c.heading_path,
                    vector=vectors[i],
                ),
            }
            for i, c in enumerate(chunks)
        ]
        for start in range(0, len(rows), 1000):
            await session.execute(insert(Chunk), rows[start : start + 1000])
    # Staged chunks are indexed like any pending ones, and masked by every search until the
    # swap below.
    await runtime.indexer.flush_tenant(tenant_id, embedder=embedder.name, dim=embedder.dim)
    old = await _swap(runtime, document.id, tenant_id, keep_curated=keep_curated, key=key)
    await remove_chunks(
        runtime.database,
        runtime.settings.index_dir,
        tenant_id,
        np.array(sorted(old + leftover), dtype=np.int64),
        keys=await runtime.indexer.keys(tenant_id),
    )
    for reader in runtime.indexer.readers:
        reader.invalidate(tenant_id)
    return len(chunks)


async def _swap(
    runtime: Runtime,
    document_id: int,
    tenant_id: int,
    *,
    keep_curated: bool,
    key: DataKey | None,
) -> list[int]:
    """In one transaction: the old chunks go, the staged ones become the document's. Returns
    the ids of the old chunks (to take out of the shards)."""
    async with runtime.database.sessionmaker() as session, session.begin():
        current = (
            await session.execute(
                select(Chunk.id, Chunk.position, Chunk.text, Chunk.enabled, Chunk.origin).where(
                    Chunk.document_id == document_id, Chunk.staged.is_(False)
                )
            )
        ).all()
        if not await _still_ready(session, document_id):
            # Re-ingested, replaced or purged meanwhile: that work owns the chunks; the staged
            # ones (if any are left) go.
            await session.execute(
                delete(Chunk).where(Chunk.document_id == document_id, Chunk.staged.is_(True))
            )
            return []
        kept = {c.id for c in current if keep_curated and c.origin != "parsed"}
        old = [c.id for c in current if c.id not in kept]
        disabled_texts = {
            open_chunk_text(key, tenant_id, document_id, c.position, c.text)
            for c in current
            if keep_curated and not c.enabled
        }
        if old:
            await session.execute(delete(Chunk).where(Chunk.id.in_(old)))
        staged = (
            await session.execute(
                select(Chunk.id, Chunk.position, Chunk.text).where(
                    Chunk.document_id == document_id, Chunk.staged.is_(True)
                )
            )
        ).all()
        for chunk_id, position, text in staged:
            enabled = (
                not disabled_texts
                or open_chunk_text(key, tenant_id, document_id, position, text)
                not in disabled_texts
            )
            await session.execute(
                update(Chunk).where(Chunk.id == chunk_id).values(staged=False, enabled=enabled)
            )
        document = await session.get(Document, document_id)
        if document is not None:
            document.chunk_count = len(staged) + len(kept)
        await versions.bump(session, tenant_id)
        return old


async def _still_ready(session: AsyncSession, document_id: int) -> bool:
    document = await session.get(Document, document_id, with_for_update=True)
    return (
        document is not None
        and document.status == DocumentStatus.READY
        and document.deleted_at is None
    )
