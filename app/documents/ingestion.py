"""One ingestion job, start to finish: parse → chunk → embed → store chunks → index.

The handler of `JobKind.INGEST` (app/jobs/handlers.py): the in-process pool and the Celery task
both reach `IngestPipeline.run` through the job registry, after claiming the job with a lease
that the pipeline renews while it works; a killed worker stops renewing, and the job becomes
claimable again. Chunks are written in the same transaction that marks the job done, after
the old chunks of the document are deleted, so a retried job never duplicates chunks. After
a replaced file, the old version is erased (verified, with its receipt) before the new file
is read. A
document that is being purged (or is gone) is never written to: the purge wins. After a large
document the worker hands its freed memory back to the OS (ingest/memory.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import ParamSpec, TypeVar

import numpy as np
from sqlalchemy import delete, insert, select

from app.documents.chunk_rows import sealed_chunk_values
from app.documents.status import DocumentStatus, document_status
from app.jobs.kinds import JobOutcome
from app.jobs.repository import job_repository
from app.kit.db import Database
from app.kit.settings import Settings
from app.kit.storage import ContentStore
from app.knowledge_base.service import knowledge_base_service
from app.models import Chunk, Document, Job
from app.search.index.writer import Indexer
from ingest.chunking import Chunk as TextChunk
from ingest.chunking import chunk_document
from ingest.embedding import Embedder, EmbedderMismatch, passage_text
from ingest.memory import RELEASE_AFTER, release_memory
from ingest.parsers import EmptyDocument, ParseError, parse
from ingest.priority import BackgroundThreads

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class LeaseLost(Exception):
    """Another worker owns the job now; drop this attempt without writing anything."""


@dataclass
class _Footprint:
    """How large the job's document was: the larger of its bytes and its parsed characters
    (a 2 MB DOCX can hold 40 MB of text)."""

    size: int = 0


class IngestPipeline:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        embedder: Embedder,
        *,
        store: ContentStore,
        indexer: Indexer,
        worker_id: str,
        defer_index: bool = False,
        threads: BackgroundThreads | None = None,
        before_read: Callable[[Job], Awaitable[None]] | None = None,
    ) -> None:
        self.database = database
        # Runs once the job has the document, before its file is read: erases the version a
        # replaced file put aside (app/documents/purge.py `erase_replaced`). What it raises is
        # retried like any other failure of the job.
        self.before_read = before_read
        # CPU-bound steps run on these (lower-priority) threads when given, else asyncio's.
        self.threads = threads
        # Deferred: a job only stores its chunks and names its tenant in `dirty`; the caller
        # indexes dirty tenants in batches, so a shard is rewritten once per batch, not once
        # per document.
        self.defer_index = defer_index
        self.dirty: set[int] = set()
        self.settings = settings
        self.embedder = embedder
        self.worker_id = worker_id
        self.store = store
        self.indexer = indexer
        self.lease = timedelta(seconds=settings.worker.lease_seconds)

    async def run(self, job: Job) -> JobOutcome:
        """Process a claimed job; never raises for a bad document."""
        footprint = _Footprint()
        try:
            return await self._attempt(job, footprint)
        finally:
            # The document's text, chunks and vectors are garbage by now (the frames that held
            # them have returned); give the pages back so one large document does not leave
            # the worker gigabytes larger for the rest of its life.
            if footprint.size >= RELEASE_AFTER:
                await self._offload(release_memory)

    async def _attempt(self, job: Job, footprint: _Footprint) -> JobOutcome:
        try:
            await self._process(job, footprint)
        except LeaseLost:
            logger.warning("job %s: lease lost to another worker; attempt dropped", job.id)
            return JobOutcome(job.id, job.tenant_id, "lost")
        except ParseError as exc:
            await self._fail(job, code=exc.code, message=exc.reason)
            return JobOutcome(job.id, job.tenant_id, "failed")
        except EmbedderMismatch as exc:
            # Retrying cannot help: an operator has to pick the model or re-embed the tenant.
            await self._fail(job, code="embedder_mismatch", message=str(exc))
            return JobOutcome(job.id, job.tenant_id, "failed")
        except Exception as exc:  # noqa: BLE001 - any other failure is retried, then reported
            logger.exception("job %s failed (attempt %s)", job.id, job.attempts)
            return await self._retry_or_fail(job, exc)
        return JobOutcome(job.id, job.tenant_id, "done")

    async def _process(self, job: Job, footprint: _Footprint) -> None:
        assert job.tenant_id is not None, "an ingestion job belongs to a tenant"
        document = await self._start(job)
        if document is None:
            return
        if self.before_read is not None:
            await self.before_read(job)
        await self.indexer.check_embedder(job.tenant_id, self.embedder)
        key = await self.store.read_key(document.tenant_id)
        data = await self._offload(
            self.store.read, document.tenant_id, document.content_sha256, key
        )
        footprint.size = len(data)
        parsed = await self._offload(parse, data, document.filename, self.settings.parse_limits)
        footprint.size = max(footprint.size, sum(len(block.text) for block in parsed.blocks))
        async with self.database.read_sessionmaker() as session:
            # The knowledge base's own chunking (size, template, ...) over the server's.
            config = await knowledge_base_service.chunking_config(
                session, document.tenant_id, self.settings
            )
        chunks = await self._offload(chunk_document, parsed, config)
        if not chunks:
            raise EmptyDocument("The document contains no text that could be indexed")
        vectors = await self._embed(job, document.id, chunks)
        await self._store_chunks(job, document.id, chunks, vectors, parsed.page_count)
        if self.defer_index:
            self.dirty.add(job.tenant_id)
        else:
            await self.flush(job.tenant_id)

    async def _offload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.threads is not None:
            return await self.threads.run(fn, *args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def flush(self, tenant_id: int) -> int:
        """Index the tenant's pending chunks."""
        return await self.indexer.flush_tenant(
            tenant_id, embedder=self.embedder.name, dim=self.embedder.dim, offload=self._offload
        )

    async def _start(self, job: Job) -> Document | None:
        async with self.database.sessionmaker() as session, session.begin():
            document = await session.get(Document, job.document_id) if job.document_id else None
            if document is None or document.status == DocumentStatus.PURGING:
                # Purged, or being purged: nothing to do, and nothing may be written.
                await job_repository.finish(session, job.id, status="done")
                return None
            document_status.mark_processing(document)
            return document

    async def _embed(self, job: Job, document_id: int, chunks: list[TextChunk]) -> np.ndarray:
        batch = self.settings.worker.embed_batch
        heading_context = self.settings.embedding.heading_context
        parts: list[np.ndarray] = []
        renewed = time.monotonic()
        reported = 0.0
        for start in range(0, len(chunks), batch):
            texts = [
                passage_text(c.text, c.heading_path, heading_context=heading_context)
                for c in chunks[start : start + batch]
            ]
            parts.append(await self._offload(self.embedder.embed_passages, texts))
            done = min(1.0, (start + len(texts)) / len(chunks))
            now = time.monotonic()
            # Renew the lease (and report progress) a few times per lease period, not per batch.
            if now - renewed > self.settings.worker.lease_seconds / 4 or done - reported >= 0.1:
                await self._heartbeat(job, document_id, progress=round(0.95 * done, 3))
                renewed, reported = now, done
        return np.vstack(parts).astype(np.float32, copy=False)

    async def _heartbeat(self, job: Job, document_id: int, *, progress: float) -> None:
        async with self.database.sessionmaker() as session, session.begin():
            if not await job_repository.renew(
                session, job.id, worker=self.worker_id, lease=self.lease
            ):
                raise LeaseLost()
            document = await session.get(Document, document_id)
            if document is not None:
                document.progress = progress

    async def _store_chunks(
        self,
        job: Job,
        document_id: int,
        chunks: list[TextChunk],
        vectors: np.ndarray,
        page_count: int | None,
    ) -> None:
        assert job.tenant_id is not None, "an ingestion job belongs to a tenant"
        tenant_id = job.tenant_id
        # Fetched (or created) before the transaction: on SQLite it holds the only writer.
        key = await self.store.write_key(tenant_id)
        async with self.database.sessionmaker() as session, session.begin():
            current = await job_repository.owned(session, job.id, worker=self.worker_id)
            if current is None:
                raise LeaseLost()
            document = await session.get(Document, document_id, with_for_update=True)
            if document is None or document.status == DocumentStatus.PURGING:
                # A purge was requested while this job embedded: it wins, and the chunks
                # are dropped here rather than written for the purge to remove again.
                await job_repository.finish(session, job.id, status="done")
                return
            await session.execute(delete(Chunk).where(Chunk.document_id == document_id))
            rows = [
                {
                    "document_id": document_id,
                    "tenant_id": tenant_id,
                    "position": c.position,
                    "token_count": c.token_count,
                    "shard_no": None,
                    **sealed_chunk_values(
                        key,
                        tenant_id,
                        document_id,
                        c.position,
                        text=c.text,
                        heading_path=c.heading_path,
                        vector=vectors[i],
                    ),
                }
                for i, c in enumerate(chunks)
            ]
            for start in range(0, len(rows), 1000):
                await session.execute(insert(Chunk), rows[start : start + 1000])
            document.chunk_count = len(chunks)
            document.page_count = page_count
            document.progress = 0.95
            await job_repository.finish(session, job.id, status="done")

    async def _fail(self, job: Job, *, code: str, message: str) -> None:
        async with self.database.sessionmaker() as session, session.begin():
            await job_repository.finish(session, job.id, status="failed", error=message)
            if job.document_id is not None:
                document = await session.get(Document, job.document_id)
                if document is not None and document_status.mark_failed(
                    document, code=code, message=message
                ):
                    await session.execute(delete(Chunk).where(Chunk.document_id == document.id))

    async def _retry_or_fail(self, job: Job, exc: Exception) -> JobOutcome:
        attempts = job.attempts
        if attempts >= self.settings.worker.max_attempts:
            await self._fail(
                job,
                code="processing_error",
                message=(
                    f"Processing failed after {attempts} attempts "
                    f"({type(exc).__name__}); see the worker log"
                ),
            )
            return JobOutcome(job.id, job.tenant_id, "failed")
        delay = self.settings.worker.backoff_seconds * (2 ** (attempts - 1))
        async with self.database.sessionmaker() as session, session.begin():
            await job_repository.requeue(
                session,
                job.id,
                worker=self.worker_id,
                error=f"attempt {attempts}: {type(exc).__name__}",
                delay=timedelta(seconds=delay),
            )
        return JobOutcome(job.id, job.tenant_id, "retry")

    async def pending_tenants(self) -> list[int]:
        """Tenants with chunks stored but not yet indexed (e.g. after a crash between steps)."""
        async with self.database.read_sessionmaker() as session:
            rows = await session.scalars(
                select(Chunk.tenant_id).where(Chunk.shard_no.is_(None)).distinct()
            )
            return list(rows)
