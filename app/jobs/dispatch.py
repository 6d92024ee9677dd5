"""Telling runners that a job is waiting. Called only after the job's row is committed (a
worker must never look for a job it cannot see yet)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

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


def broker_problem(broker_url: str, timeout: float) -> str | None:
    """Why the broker does not take a connection, or None when it does (blocking: one
    attempt, no retries)."""
    from kombu.connection import Connection

    try:
        with Connection(broker_url, connect_timeout=timeout) as connection:  # type: ignore[no-untyped-call]
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=timeout
            )
    except Exception as exc:  # noqa: BLE001 - any transport error means "not reachable"
        logger.warning("broker not reachable: %s", exc)
        # The type only: the message can name hosts (and, for some transports, credentials).
        return f"unreachable ({type(exc).__name__})"
    return None
