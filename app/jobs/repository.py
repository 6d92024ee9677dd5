"""The job table: create, claim with a lease, renew, finish. The only SQL over `jobs`."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job
from app.models.base import utcnow


class JobRepository:
    def add(self, session: AsyncSession, job: Job) -> Job:
        session.add(job)
        return job

    async def get(self, session: AsyncSession, job_id: int) -> Job | None:
        return await session.get(Job, job_id)

    def _claimable(self, now: datetime) -> ColumnElement[bool]:
        return or_(
            (Job.status == "queued") & (Job.run_after <= now),
            # A running job whose worker stopped renewing its lease (killed, crashed).
            (Job.status == "running") & (Job.lease_until < now),
        )

    async def any_claimable(self, session: AsyncSession) -> bool:
        """A cheap read-only check, so idle pollers do not take SQLite's write lock."""
        found = await session.scalar(select(Job.id).where(self._claimable(utcnow())).limit(1))
        return found is not None

    async def claim(
        self,
        session: AsyncSession,
        *,
        worker: str,
        lease: timedelta,
        job_id: int | None = None,
        skip_locked: bool = False,
    ) -> Job | None:
        """Take the next claimable job (or this one) for `worker`, leasing it for `lease`."""
        now = utcnow()
        stmt = select(Job).where(self._claimable(now)).order_by(Job.id).limit(1)
        if job_id is not None:
            stmt = stmt.where(Job.id == job_id)
        # PostgreSQL: concurrent workers skip each other's rows. SQLite needs nothing more:
        # BEGIN IMMEDIATE already serialises the whole claim.
        stmt = stmt.with_for_update(skip_locked=True) if skip_locked else stmt
        job = await session.scalar(stmt)
        if job is None:
            return None
        job.status = "running"
        job.attempts += 1
        job.locked_by = worker
        job.lease_until = now + lease
        await session.flush()
        return job

    async def renew(
        self, session: AsyncSession, job_id: int, *, worker: str, lease: timedelta
    ) -> bool:
        """Extend the lease; False when the job is no longer ours (then stop working on it)."""
        result = await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.locked_by == worker, Job.status == "running")
            .values(lease_until=utcnow() + lease)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def stale_ids(self, session: AsyncSession, *, older_than: timedelta) -> list[int]:
        """Jobs nobody is working on: queued for a while, or running with an expired lease."""
        now = utcnow()
        rows = await session.scalars(
            select(Job.id).where(
                or_(
                    (Job.status == "queued") & (Job.run_after <= now - older_than),
                    (Job.status == "running") & (Job.lease_until < now),
                )
            )
        )
        return list(rows)

    async def mark_resent(self, session: AsyncSession, job_ids: list[int]) -> None:
        """Restart the clock of re-sent queued jobs, so one sweep does not resend them again."""
        if job_ids:
            await session.execute(
                update(Job)
                .where(Job.id.in_(job_ids), Job.status == "queued")
                .values(run_after=utcnow())
            )

    async def counts(self, session: AsyncSession) -> dict[str, int]:
        rows = await session.execute(select(Job.status, func.count()).group_by(Job.status))
        return {status: int(n) for status, n in rows}


job_repository = JobRepository()
