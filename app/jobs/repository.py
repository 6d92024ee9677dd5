"""The job table: create, claim with a lease, renew, finish, retry. The only SQL over `jobs`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, PeriodicRun
from app.models.base import utcnow


class JobRepository:
    def add(self, session: AsyncSession, job: Job) -> Job:
        session.add(job)
        return job

    async def get(self, session: AsyncSession, job_id: int) -> Job | None:
        return await session.get(Job, job_id)

    async def for_document(self, session: AsyncSession, document_id: int) -> Sequence[Job]:
        """A document's jobs, oldest first (its history, for the web admin's document page)."""
        rows = await session.scalars(
            select(Job).where(Job.document_id == document_id).order_by(Job.id)
        )
        return rows.all()

    def _claimable(self, now: datetime, kinds: Sequence[str]) -> ColumnElement[bool]:
        return Job.kind.in_(list(kinds)) & or_(
            (Job.status == "queued") & (Job.run_after <= now),
            # A running job whose worker stopped renewing its lease (killed, crashed).
            (Job.status == "running") & (Job.lease_until < now),
        )

    async def any_claimable(self, session: AsyncSession, kinds: Sequence[str]) -> bool:
        """A cheap read-only check, so idle pollers do not take SQLite's write lock."""
        found = await session.scalar(
            select(Job.id).where(self._claimable(utcnow(), kinds)).limit(1)
        )
        return found is not None

    async def claim(
        self,
        session: AsyncSession,
        *,
        worker: str,
        lease: timedelta,
        kinds: Sequence[str],
        job_id: int | None = None,
        skip_locked: bool = False,
    ) -> Job | None:
        """Take the next claimable job of these kinds (or this one) for `worker`, leasing it
        for `lease`."""
        now = utcnow()
        stmt = select(Job).where(self._claimable(now, kinds)).order_by(Job.id).limit(1)
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

    async def owned(self, session: AsyncSession, job_id: int, *, worker: str) -> Job | None:
        """The job, locked, when `worker` still holds its lease; None otherwise."""
        job = await session.get(Job, job_id, with_for_update=True)
        if job is None or job.locked_by != worker or job.status != "running":
            return None
        return job

    async def finish(
        self, session: AsyncSession, job_id: int, *, status: str, error: str | None = None
    ) -> None:
        """End the job (done or failed) and release its lease."""
        job = await session.get(Job, job_id)
        if job is None:
            return
        job.status = status
        job.error = error
        job.lease_until = None
        job.finished_at = utcnow()

    async def requeue(
        self, session: AsyncSession, job_id: int, *, worker: str, error: str, delay: timedelta
    ) -> None:
        """Put a job this worker holds back in the queue, to run again after `delay`."""
        job = await session.get(Job, job_id)
        if job is not None and job.locked_by == worker:
            job.status = "queued"
            job.error = error
            job.lease_until = None
            job.locked_by = None
            job.run_after = utcnow() + delay

    async def open_for_subject(
        self, session: AsyncSession, kind: str, subject_id: int
    ) -> Job | None:
        """The newest job of this kind on this subject that has not finished, if any."""
        return await session.scalar(
            select(Job)
            .where(
                Job.kind == kind,
                Job.subject_id == subject_id,
                Job.status.in_(("queued", "running")),
            )
            .order_by(Job.id.desc())
            .limit(1)
        )

    async def record_progress(
        self, session: AsyncSession, job_id: int, *, done: int, total: int, payload: str
    ) -> None:
        """A step of a job of several steps is done: how many, of how many, and where a
        retried job resumes."""
        await session.execute(
            update(Job).where(Job.id == job_id).values(done=done, total=total, payload=payload)
        )

    async def stale_ids(
        self, session: AsyncSession, *, older_than: timedelta, kinds: Sequence[str]
    ) -> list[int]:
        """Jobs nobody is working on: queued for a while, or running with an expired lease."""
        now = utcnow()
        rows = await session.scalars(
            select(Job.id).where(
                Job.kind.in_(list(kinds)),
                or_(
                    (Job.status == "queued") & (Job.run_after <= now - older_than),
                    (Job.status == "running") & (Job.lease_until < now),
                ),
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

    async def depth(self, session: AsyncSession) -> list[tuple[str, str, int]]:
        """(kind, status, count) of unfinished and failed jobs: an index range over status,
        never the done jobs, which are most of the table."""
        rows = await session.execute(
            select(Job.kind, Job.status, func.count())
            .where(Job.status.in_(("queued", "running", "failed")))
            .group_by(Job.kind, Job.status)
        )
        return [(kind, status, int(n)) for kind, status, n in rows]

    async def oldest_runnable(self, session: AsyncSession) -> dict[str, datetime]:
        """Per kind, since when its longest-waiting runnable queued job could have run."""
        rows = await session.execute(
            select(Job.kind, func.min(Job.run_after))
            .where(Job.status == "queued", Job.run_after <= utcnow())
            .group_by(Job.kind)
        )
        return {kind: since for kind, since in rows}

    async def counts(self, session: AsyncSession) -> dict[str, int]:
        rows = await session.execute(select(Job.status, func.count()).group_by(Job.status))
        return {status: int(n) for status, n in rows}

    async def open_count_for_documents(
        self, session: AsyncSession, document_ids: Sequence[int]
    ) -> int:
        """How many jobs on these documents are still queued or running."""
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.document_id.in_(list(document_ids)), Job.status.in_(("queued", "running"))
                )
            )
            or 0
        )

    async def count_for_document(self, session: AsyncSession, document_id: int) -> int:
        """Jobs that name this document."""
        return int(
            await session.scalar(
                select(func.count()).select_from(Job).where(Job.document_id == document_id)
            )
            or 0
        )

    async def queued_of_kind(self, session: AsyncSession, kind: str) -> bool:
        """Whether a job of this kind waits to start (one that has started does not count)."""
        found = await session.scalar(
            select(Job.id).where(Job.kind == kind, Job.status == "queued").limit(1)
        )
        return found is not None

    async def delete_for_document(self, session: AsyncSession, document_id: int) -> None:
        """Drop the jobs that name a document being erased."""
        await session.execute(delete(Job).where(Job.document_id == document_id))

    async def ensure_periodic(self, session: AsyncSession, name: str, *, due: datetime) -> None:
        """Create the periodic task's row (first due at `due`) unless it exists; safe when
        several processes do it at once."""
        backend = session.get_bind().dialect.name
        dialect = postgresql if backend == "postgresql" else sqlite
        await session.execute(
            dialect.insert(PeriodicRun)
            .values(name=name, next_run_at=due)
            .on_conflict_do_nothing(index_elements=["name"])
        )

    async def take_period(
        self, session: AsyncSession, name: str, *, now: datetime, next_run_at: datetime
    ) -> bool:
        """Claim the task's current period when it is due: a conditional update, so of any
        number of processes asking at once exactly one gets True."""
        result = await session.execute(
            update(PeriodicRun)
            .where(PeriodicRun.name == name, PeriodicRun.next_run_at <= now)
            .values(next_run_at=next_run_at, last_run_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def record_periodic_job(self, session: AsyncSession, name: str, job_id: int) -> None:
        await session.execute(
            update(PeriodicRun).where(PeriodicRun.name == name).values(last_job_id=job_id)
        )


job_repository = JobRepository()
