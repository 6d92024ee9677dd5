"""Celery tasks (scaled out): the same pipeline as the in-process pool, driven by Redis.

The job table stays the source of truth: a task only carries a job id and claims it with a
lease like any runner. `cairn worker` also sweeps for jobs nobody runs (a worker SIGKILLed
mid-job stops renewing its lease; a message lost in the broker leaves a job queued) and
sends them again, so no document is lost whatever happens to a worker or the broker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.process
import os
import threading
import time
from datetime import timedelta
from functools import cache
from typing import Any

from celery import Celery

from app.jobs.repository import job_repository
from app.kit.settings import Settings, get_settings

logger = logging.getLogger(__name__)


@cache
def celery_app_for(broker_url: str) -> Celery:
    """The Celery app for a broker."""
    app = Celery("cairn", broker=broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cairn",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name="cairn.ingest", bind=False)(_ingest_task)
    app.task(name="cairn.flush", bind=False)(_flush_task)
    return app


class _Runtime:
    """Per worker process: one event loop, one database, one loaded embedder."""

    def __init__(self, settings: Settings) -> None:
        from app.main import database_for
        from ingest.embedding import load_embedder
        from ingest.pipeline import IngestPipeline
        from ingest.worker import worker_id

        self.loop = asyncio.new_event_loop()
        self.database = database_for(settings)
        self.pipeline = IngestPipeline(
            self.database, settings, load_embedder(settings.embedding), worker_id=worker_id()
        )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def _rt() -> _Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _Runtime(get_settings())
        return _runtime


def _ingest_task(job_id: int) -> str:
    rt = _rt()
    job = rt.run(rt.pipeline.claim(job_id))
    if job is None:
        return "not-claimable"  # done already, or another worker holds a live lease
    outcome = rt.run(rt.pipeline.run(job))
    return str(outcome.status)


def _flush_task(tenant_id: int) -> int:
    rt = _rt()
    return int(rt.run(rt.pipeline.flush(tenant_id)))


async def _resend_stale(settings: Settings, app: Celery) -> None:
    from app.main import database_for

    database = database_for(settings)
    try:
        async with database.sessionmaker() as session, session.begin():
            ids = await job_repository.stale_ids(
                session, older_than=timedelta(seconds=settings.worker.sweep_seconds)
            )
            for job_id in ids:
                app.send_task("cairn.ingest", args=[job_id])
                logger.info("re-sent stale job %s", job_id)
            await job_repository.mark_resent(session, ids)
    finally:
        await database.dispose()


def sweep_forever(settings: Settings) -> None:
    """Re-send stale jobs every `sweep_seconds` while the parent `cairn worker` lives.

    Runs in its own spawned process, not a thread of the Celery main process: the prefork
    pool forks that process, and a fork taken while a thread holds a lock (logging, the
    database driver, OpenMP) can leave the child hung for good.
    """
    assert settings.broker_url is not None
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s: %(levelname)s/sweeper] %(message)s"
    )
    parent = os.getppid()
    app = celery_app_for(settings.broker_url)
    while os.getppid() == parent:
        time.sleep(settings.worker.sweep_seconds)
        try:
            asyncio.run(_resend_stale(settings, app))
        except Exception:  # noqa: BLE001 - keep sweeping through transient errors
            logger.exception("stale-job sweep failed")


def start_sweeper(settings: Settings) -> multiprocessing.process.BaseProcess:
    """Start the stale-job sweeper process (it exits when its parent does)."""
    process = multiprocessing.get_context("spawn").Process(
        target=sweep_forever, args=(settings,), name="cairn-sweeper", daemon=True
    )
    process.start()
    return process
