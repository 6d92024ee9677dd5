"""A running job's lease is renewed on a timer while its handler works, so a slow step (a big
embedding batch on a busy machine) never lets another worker take the job over; a job whose
process is gone still expires (nothing renews it). Found by tests/test_scale_out.py: before,
the lease was renewed only between embedding batches, and on a loaded box two Celery workers
took one long document from each other for minutes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from app.jobs.handlers import lease_renewer
from app.jobs.kinds import JobKind, JobOutcome
from app.jobs.registry import JobRegistry
from app.jobs.repository import job_repository
from app.jobs.runtime import Runtime
from app.kit.settings import Settings
from app.models import Job

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

LEASE = 0.4  # seconds; the handler below works several leases long


async def _claim(runtime: Runtime, worker: str, job_id: int) -> Job | None:
    async with runtime.database.sessionmaker() as session, session.begin():
        return await job_repository.claim(
            session,
            worker=worker,
            lease=timedelta(seconds=LEASE),
            kinds=[JobKind.AUDIT_CHECKPOINT.value],
            job_id=job_id,
        )


async def _run_slow_job(runtime: Runtime, registry: JobRegistry) -> Job | None:
    """Worker A runs a job that takes 4 leases; worker B tries to claim it at 2.5 leases."""
    async with runtime.database.sessionmaker() as session, session.begin():
        row = job_repository.add(session, Job(kind=JobKind.AUDIT_CHECKPOINT.value))
        await session.flush()
        job_id = row.id
    job = await _claim(runtime, "worker-a", job_id)
    assert job is not None

    async def slow(job: Job) -> JobOutcome:
        await asyncio.sleep(LEASE * 4)
        return JobOutcome(job.id, None, "done")

    registry.register(JobKind.AUDIT_CHECKPOINT, slow)
    running = asyncio.create_task(registry.run(job))
    await asyncio.sleep(LEASE * 2.5)
    stolen = await _claim(runtime, "worker-b", job_id)
    await running
    return stolen


async def test_a_slow_handler_keeps_its_job(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"lease_seconds": LEASE})}
    )
    runtime = Runtime(settings)
    try:
        registry = JobRegistry(lease_renewer(runtime, "worker-a"), renew_every=LEASE / 4)
        assert await _run_slow_job(runtime, registry) is None
    finally:
        await runtime.close()


async def test_without_renewal_the_lease_lapses(settings: Settings) -> None:
    """The control: the same slow job, no renewal — worker B takes it over."""
    runtime = Runtime(settings)
    try:
        stolen = await _run_slow_job(runtime, JobRegistry())
        assert stolen is not None
        assert stolen.locked_by == "worker-b"
    finally:
        await runtime.close()
