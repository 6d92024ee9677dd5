"""The in-process worker pool (the embedded default, and `cairn worker` without a broker).

`concurrency` loops claim jobs of every registered kind and run them through the registry, so
the parsing and database writes of one overlap with the embedding of another. One more loop
writes the index for tenants whose ingestion jobs stored chunks, and another starts periodic
work when it is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from app.documents.ingestion import IngestPipeline
from app.jobs.dispatch import PollingDispatcher
from app.jobs.handlers import build_registry, worker_id
from app.jobs.periodic import start_due
from app.jobs.registry import JobRegistry
from app.jobs.runner import JobClaimer
from app.jobs.runtime import Runtime
from app.kit.settings import IndexSettings
from ingest.embedding import EmbedderMismatch

logger = logging.getLogger(__name__)


def flush_pause(took: float, settings: IndexSettings) -> float:
    """Seconds until the next indexing round after one that took `took` seconds."""
    share = settings.flush_max_share
    return max(settings.flush_interval_seconds, took * (1 - share) / share)


class WorkerPool:
    def __init__(self, runtime: Runtime, dispatcher: PollingDispatcher | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.dispatcher = dispatcher or PollingDispatcher()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.pipeline: IngestPipeline | None = None
        self.registry: JobRegistry | None = None
        self.claimer: JobClaimer | None = None

    async def start(self) -> None:
        """Load the embedder, index anything left pending by a crash, start the loops."""
        name = worker_id()
        self.registry, self.pipeline = await build_registry(
            self.runtime, worker=name, defer_index=True
        )
        self.claimer = JobClaimer(self.runtime, worker_id=name, kinds=self.registry.kinds)
        self.pipeline.dirty.update(await self.pipeline.pending_tenants())
        await self._flush_dirty()
        self._tasks = [
            asyncio.create_task(self._loop(n), name=f"cairn-worker-{n}")
            for n in range(self.settings.worker.concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="cairn-indexer"))
        self._tasks.append(asyncio.create_task(self._periodic_loop(), name="cairn-periodic"))

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
            if self.pipeline.threads is not None:
                self.pipeline.threads.close()

    async def _flush_loop(self) -> None:
        """Index what the jobs stored, tenant by tenant, every `flush_interval_seconds`:
        embedding goes on meanwhile, and a shard is rewritten once per round.

        Rewriting the open shard costs time in proportion to its size, and every API process
        then reloads it; so the rounds are spaced out until rewriting takes at most
        `flush_max_share` of the time (a bulk import into a large shard flushes every few
        seconds rather than every second)."""
        pause = self.settings.index.flush_interval_seconds
        while not self._stopping.is_set():
            await asyncio.sleep(pause)
            started = time.monotonic()
            await self._flush_dirty()
            pause = flush_pause(time.monotonic() - started, self.settings.index)

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

    async def _periodic_loop(self) -> None:
        """Start due periodic work; the pool's own loops then run it like any job."""
        while not self._stopping.is_set():
            try:
                started = await start_due(
                    self.runtime.database, self.settings, now=self.runtime.now()
                )
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the loop
                logger.exception("could not start periodic work")
                started = []
            if started:
                self.dispatcher.wakeup.set()
            await asyncio.sleep(self.settings.worker.periodic_check_seconds)

    async def _loop(self, n: int) -> None:
        assert self.claimer is not None
        assert self.registry is not None
        while not self._stopping.is_set():
            try:
                job = await self.claimer.claim()
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
            outcome = await self.registry.run(job)
            logger.info("job %s (%s): %s", outcome.job_id, job.kind, outcome.status)
