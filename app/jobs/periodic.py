"""Periodic work as jobs: the retention purge, shard compaction, audit checkpoints, backups.

Every process that runs jobs calls `start_due` every `worker.periodic_check_seconds`. A task's
row in `periodic_runs` says when it is next due; the conditional update in `take_period` lets
exactly one caller move it on, and that caller creates the period's job in the same
transaction. So a task runs once per period however many API and worker processes there are,
with no broker and no beat process; the job itself then runs like any other (leased, retried,
taken over when its worker dies).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.jobs.kinds import JobKind
from app.jobs.repository import job_repository
from app.kit.db import Database
from app.kit.settings import Settings
from app.models import Job

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicTask:
    kind: JobKind
    every: timedelta


def periodic_tasks(settings: Settings) -> list[PeriodicTask]:
    """The periodic tasks configured to run (a period of 0 switches one off)."""
    worker = settings.worker
    periods = {
        JobKind.RETENTION_PURGE: worker.retention_purge_seconds,
        JobKind.SHARD_COMPACTION: worker.shard_compaction_seconds,
        JobKind.AUDIT_CHECKPOINT: worker.audit_checkpoint_seconds,
        JobKind.BACKUP: settings.backup.interval_seconds,
    }
    return [
        PeriodicTask(kind, timedelta(seconds=seconds))
        for kind, seconds in periods.items()
        if seconds > 0
    ]


async def start_due(database: Database, settings: Settings, *, now: datetime) -> list[int]:
    """Create the job of every periodic task that is due at `now`; the new jobs' ids."""
    started: list[int] = []
    for task in periodic_tasks(settings):
        async with database.sessionmaker() as session, session.begin():
            await job_repository.ensure_periodic(session, task.kind.value, due=now)
        async with database.sessionmaker() as session, session.begin():
            if not await job_repository.take_period(
                session, task.kind.value, now=now, next_run_at=now + task.every
            ):
                continue
            job = job_repository.add(session, Job(kind=task.kind.value, tenant_id=None))
            await session.flush()
            await job_repository.record_periodic_job(session, task.kind.value, job.id)
            started.append(job.id)
            logger.info("periodic %s: started job %s", task.kind.value, job.id)
    return started
