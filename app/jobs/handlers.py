"""The job registry of a runner process: every kind of background work and its handler."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta

from app.audit.checkpoints import write_checkpoints
from app.backup.schedule import BackupBusy, backup_to_root
from app.crypto.rotation import rotate_tenant_key
from app.documents.ingestion import IngestPipeline
from app.documents.purge import purge_service
from app.documents.reparse import run_reparse
from app.jobs.kinds import JobKind
from app.jobs.registry import JobRegistry, Renew
from app.jobs.repository import job_repository
from app.jobs.runner import simple_handler
from app.jobs.runtime import Runtime
from app.knowledge_base.bm25_rebuild import run_bm25_rebuild
from app.models import Job
from app.search.index.erasure import compact_shards
from ingest.priority import BackgroundThreads

logger = logging.getLogger(__name__)


def worker_id() -> str:
    """A name for this worker process, recorded on the jobs it leases."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_renewer(runtime: Runtime, worker: str) -> Renew:
    """Extends a job's lease by `worker.lease_seconds` while `worker` holds it."""
    lease = timedelta(seconds=runtime.settings.worker.lease_seconds)

    async def renew(job: Job) -> bool:
        async with runtime.database.sessionmaker() as session, session.begin():
            return await job_repository.renew(session, job.id, worker=worker, lease=lease)

    return renew


async def build_registry(
    runtime: Runtime, *, worker: str, defer_index: bool = False
) -> tuple[JobRegistry, IngestPipeline]:
    """Handlers for every job kind, sharing one runtime; also the ingestion pipeline (whose
    deferred index writes the in-process pool flushes)."""

    async def erase_replaced(job: Job) -> None:
        if job.document_id is not None:
            final = job.attempts >= runtime.settings.worker.max_attempts
            await purge_service.erase_replaced(runtime, job.document_id, final=final)

    pipeline = IngestPipeline(
        runtime.database,
        runtime.settings,
        await runtime.embedder(),
        store=runtime.store,
        indexer=runtime.indexer,
        worker_id=worker,
        defer_index=defer_index,
        threads=BackgroundThreads(
            runtime.settings.worker.ingest_nice,
            runtime.settings.worker.concurrency,
            idle=runtime.settings.worker.ingest_idle,
        ),
        before_read=erase_replaced,
    )
    registry = JobRegistry(
        lease_renewer(runtime, worker), renew_every=runtime.settings.worker.lease_seconds / 4
    )
    registry.register(JobKind.INGEST, pipeline.run)
    registry.register(
        JobKind.PURGE, simple_handler(runtime, worker, lambda job: purge_service.run(runtime, job))
    )

    async def retention(job: Job) -> None:
        await purge_service.purge_expired(runtime)

    async def compaction(job: Job) -> None:
        await compact_shards(runtime.database, runtime.settings.index_dir)

    async def checkpoint(job: Job) -> None:
        async with runtime.database.sessionmaker() as session, session.begin():
            await write_checkpoints(session, runtime.settings)

    registry.register(JobKind.RETENTION_PURGE, simple_handler(runtime, worker, retention))
    registry.register(JobKind.SHARD_COMPACTION, simple_handler(runtime, worker, compaction))

    async def backup(job: Job) -> None:
        # Blocking file and database work: a thread, so the process keeps serving.
        try:
            await asyncio.to_thread(backup_to_root, runtime.settings)
        except BackupBusy:
            # The previous period's backup still runs: this period's is that one.
            logger.info("backup job %s: the previous backup is still running", job.id)

    registry.register(JobKind.AUDIT_CHECKPOINT, simple_handler(runtime, worker, checkpoint))
    registry.register(JobKind.BACKUP, simple_handler(runtime, worker, backup))

    async def key_rotation(job: Job) -> None:
        assert job.tenant_id is not None, "a key rotation job names its tenant"
        await rotate_tenant_key(runtime, job.tenant_id)

    registry.register(JobKind.ROTATE_TENANT_KEY, simple_handler(runtime, worker, key_rotation))

    async def reparse(job: Job) -> None:
        await run_reparse(runtime, job)

    registry.register(JobKind.REPARSE, simple_handler(runtime, worker, reparse))

    async def bm25_rebuild(job: Job) -> None:
        await run_bm25_rebuild(runtime, job)

    registry.register(JobKind.BM25_REBUILD, simple_handler(runtime, worker, bm25_rebuild))
    return registry, pipeline
