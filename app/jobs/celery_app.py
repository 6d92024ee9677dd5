"""Celery (scaled out): one task runs any job, through the same registry as the in-process
pool.

The job table stays the source of truth: a message only carries a job id, and the task claims
it with a lease like any runner. `cairn worker` also runs a sweeper process that re-sends jobs
nobody runs (a worker SIGKILLed mid-job stops renewing its lease; a message lost in the broker
leaves a job queued) and starts due periodic work, so no job is lost whatever happens to a
worker or the broker, and no beat process is needed.
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

from app.jobs.kinds import JobKind
from app.jobs.periodic import start_due
from app.jobs.repository import job_repository
from app.jobs.runtime import Runtime
from app.kit.logs import configure_logging
from app.kit.settings import Settings, get_settings

logger = logging.getLogger(__name__)

RUN_JOB = "cairn.run_job"
FLUSH = "cairn.flush"


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
    app.task(name=RUN_JOB, bind=False)(_run_job_task)
    app.task(name=FLUSH, bind=False)(_flush_task)
    return app


class _WorkerState:
    """Per worker process: one event loop, one runtime, one registry."""

    def __init__(self, settings: Settings) -> None:
        from app.jobs.handlers import build_registry, worker_id
        from app.jobs.runner import JobClaimer

        self.loop = asyncio.new_event_loop()
        self.runtime = Runtime(settings)
        name = worker_id()
        self.registry, self.pipeline = self.run(build_registry(self.runtime, worker=name))
        self.claimer = JobClaimer(self.runtime, worker_id=name, kinds=self.registry.kinds)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


_state: _WorkerState | None = None
_state_lock = threading.Lock()


def _worker_state() -> _WorkerState:
    global _state
    with _state_lock:
        if _state is None:
            _state = _WorkerState(get_settings())
        return _state


def _run_job_task(job_id: int) -> str:
    state = _worker_state()
    job = state.run(state.claimer.claim(job_id))
    if job is None:
        return "not-claimable"  # done already, or another worker holds a live lease
    outcome = state.run(state.registry.run(job))
    return str(outcome.status)


def _flush_task(tenant_id: int) -> int:
    state = _worker_state()
    return int(state.run(state.pipeline.flush(tenant_id)))


async def _sweep(settings: Settings, app: Celery) -> None:
    """Re-send stale jobs and start due periodic work."""
    runtime = Runtime(settings)
    kinds = [kind.value for kind in JobKind]
    try:
        async with runtime.database.sessionmaker() as session, session.begin():
            ids = await job_repository.stale_ids(
                session, older_than=timedelta(seconds=settings.worker.sweep_seconds), kinds=kinds
            )
            await job_repository.mark_resent(session, ids)
        # Sent after the commit, like every dispatch.
        for job_id in ids:
            app.send_task(RUN_JOB, args=[job_id])
            logger.info("re-sent stale job %s", job_id)
        for job_id in await start_due(runtime.database, settings, now=runtime.now()):
            app.send_task(RUN_JOB, args=[job_id])
    finally:
        await runtime.close()


def sweep_forever(settings: Settings) -> None:
    """Sweep every `sweep_seconds` (or sooner, for periodic work) while the parent lives.

    Runs in its own spawned process, not a thread of the Celery main process: the prefork
    pool forks that process, and a fork taken while a thread holds a lock (logging, the
    database driver, OpenMP) can leave the child hung for good.
    """
    assert settings.broker_url is not None
    configure_logging(settings)
    parent = os.getppid()
    app = celery_app_for(settings.broker_url)
    interval = min(settings.worker.sweep_seconds, settings.worker.periodic_check_seconds)
    while os.getppid() == parent:
        time.sleep(interval)
        try:
            asyncio.run(_sweep(settings, app))
        except Exception:  # noqa: BLE001 - keep sweeping through transient errors
            logger.exception("stale-job sweep failed")


def start_sweeper(settings: Settings) -> multiprocessing.process.BaseProcess:
    """Start the sweeper process (it exits when its parent does)."""
    process = multiprocessing.get_context("spawn").Process(
        target=sweep_forever, args=(settings,), name="cairn-sweeper", daemon=True
    )
    process.start()
    return process
