"""Telling runners that a job is waiting. Called only after the job's row is committed (a
worker must never look for a job it cannot see yet)."""

from __future__ import annotations

import asyncio
from typing import Protocol


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
    """Scaled out: hand the job id to Celery on the broker."""

    def __init__(self, broker_url: str) -> None:
        from app.jobs.celery_app import RUN_JOB, celery_app_for

        self.app = celery_app_for(broker_url)
        self.task_name = RUN_JOB

    def enqueue(self, job_id: int) -> None:
        self.app.send_task(self.task_name, args=[job_id])


def dispatcher_for(broker_url: str | None) -> PollingDispatcher | CeleryDispatcher:
    """Celery when a broker is configured, else the in-process pool's wake-up."""
    return CeleryDispatcher(broker_url) if broker_url else PollingDispatcher()
