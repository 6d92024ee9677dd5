"""The in-process worker pool (embedded default) and the job dispatchers the API notifies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Protocol

from app.kit.db import Database
from app.kit.settings import Settings
from ingest.embedding import EmbedderMismatch, load_embedder
from ingest.pipeline import IngestPipeline

logger = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def enqueue(self, job_id: int) -> None:
        """Tell the runners a job is waiting (after its row is committed)."""


class PollingDispatcher:
    """For the in-process pool: wake it early; it would find the job on its next poll anyway."""

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()

    def enqueue(self, job_id: int) -> None:
        self.wakeup.set()


class CeleryDispatcher:
    """Scaled out: hand the job id to Celery on Redis."""

    def __init__(self, broker_url: str) -> None:
        from ingest.tasks import celery_app_for

        self.app = celery_app_for(broker_url)

    def enqueue(self, job_id: int) -> None:
        self.app.send_task("cairn.ingest", args=[job_id])


def worker_id() -> str:
    """A name for this worker process, recorded on the jobs it leases."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerPool:
    """`concurrency` loops claiming and running jobs, so parsing and database writes of one
    job overlap with the embedding of another."""

    def __init__(
        self, database: Database, settings: Settings, dispatcher: PollingDispatcher | None = None
    ) -> None:
        self.database = database
        self.settings = settings
        self.dispatcher = dispatcher or PollingDispatcher()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.pipeline: IngestPipeline | None = None

    async def start(self) -> None:
        """Load the embedder, index anything left pending by a crash, start the loops."""
        embedder = await asyncio.to_thread(load_embedder, self.settings.embedding)
        self.pipeline = IngestPipeline(
            self.database, self.settings, embedder, worker_id=worker_id(), defer_index=True
        )
        self.pipeline.dirty.update(await self.pipeline.pending_tenants())
        await self._flush_dirty()
        self._tasks = [
            asyncio.create_task(self._loop(n), name=f"cairn-worker-{n}")
            for n in range(self.settings.worker.concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="cairn-indexer"))

    async def stop(self) -> None:
        """Stop claiming; cancel running work (its lease expires and another worker retries)."""
        self._stopping.set()
        self.dispatcher.wakeup.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.pipeline is not None:
            # Chunks stored by finished jobs become searchable before the process exits.
            with contextlib.suppress(Exception):
                await self._flush_dirty()

    async def _flush_loop(self) -> None:
        """Index what the jobs stored, tenant by tenant, every `flush_interval_seconds`:
        embedding goes on meanwhile, and a shard is rewritten once per round."""
        while not self._stopping.is_set():
            await asyncio.sleep(self.settings.index.flush_interval_seconds)
            await self._flush_dirty()

    async def _flush_dirty(self) -> None:
        assert self.pipeline is not None
        tenants = sorted(self.pipeline.dirty)
        self.pipeline.dirty.clear()
        for tenant_id in tenants:
            try:
                await self.pipeline.flush(tenant_id)
            except EmbedderMismatch as exc:
                logger.error("tenant %s: pending chunks not indexed: %s", tenant_id, exc)
            except Exception:  # noqa: BLE001 - try again next round
                logger.exception("tenant %s: indexing failed; retrying", tenant_id)
                self.pipeline.dirty.add(tenant_id)

    async def _loop(self, n: int) -> None:
        assert self.pipeline is not None
        while not self._stopping.is_set():
            try:
                job = await self.pipeline.claim()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the loop
                logger.exception("worker %s: could not claim a job", n)
                job = None
            if job is None:
                self.dispatcher.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.dispatcher.wakeup.wait(), timeout=self.settings.worker.poll_seconds
                    )
                continue
            outcome = await self.pipeline.run(job)
            logger.info("job %s: %s", outcome.job_id, outcome.status)
