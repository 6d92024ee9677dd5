"""Claiming jobs and running the simple ones: one process's view of the job table.

A simple job is a coroutine over the job row: it is retried with backoff when it raises, and
ends `failed` with the reason after `worker.max_attempts`. Ingestion has its own retry rules
(a bad document fails at once) and handles its job row itself, through the repository.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from app.jobs.kinds import JobOutcome
from app.jobs.repository import job_repository
from app.jobs.runtime import Runtime
from app.models import Job

logger = logging.getLogger(__name__)


class JobClaimer:
    """Leases jobs of the given kinds for one worker."""

    def __init__(self, runtime: Runtime, *, worker_id: str, kinds: Sequence[str]) -> None:
        self.runtime = runtime
        self.worker_id = worker_id
        self.kinds = tuple(kinds)
        self.lease = timedelta(seconds=runtime.settings.worker.lease_seconds)

    async def claim(self, job_id: int | None = None) -> Job | None:
        """Lease the next runnable job (or the given one)."""
        database = self.runtime.database
        if job_id is None:
            async with database.read_sessionmaker() as session:
                if not await job_repository.any_claimable(session, self.kinds):
                    return None
        async with database.sessionmaker() as session, session.begin():
            return await job_repository.claim(
                session,
                worker=self.worker_id,
                lease=self.lease,
                kinds=self.kinds,
                job_id=job_id,
                skip_locked=not database.is_sqlite,
            )


def simple_handler(
    runtime: Runtime, worker_id: str, work: Callable[[Job], Awaitable[None]]
) -> Callable[[Job], Awaitable[JobOutcome]]:
    """A handler that runs `work` and records the job done, retried or failed."""

    async def handle(job: Job) -> JobOutcome:
        settings = runtime.settings.worker
        try:
            await work(job)
        except Exception as exc:  # noqa: BLE001 - recorded on the job, retried, then failed
            logger.exception("job %s (%s) failed (attempt %s)", job.id, job.kind, job.attempts)
            reason = f"attempt {job.attempts}: {type(exc).__name__}: {exc}"[:2000]
            async with runtime.database.sessionmaker() as session, session.begin():
                if job.attempts >= settings.max_attempts:
                    await job_repository.finish(session, job.id, status="failed", error=reason)
                    return JobOutcome(job.id, job.tenant_id, "failed")
                delay = timedelta(seconds=settings.backoff_seconds * (2 ** (job.attempts - 1)))
                await job_repository.requeue(
                    session, job.id, worker=worker_id, error=reason, delay=delay
                )
            return JobOutcome(job.id, job.tenant_id, "retry")
        async with runtime.database.sessionmaker() as session, session.begin():
            await job_repository.finish(session, job.id, status="done")
        return JobOutcome(job.id, job.tenant_id, "done")

    return handle
