"""Which handler runs which kind of job. Runners (the in-process pool, the one Celery task)
claim only the kinds registered here and hand each job to its handler."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from app.jobs.kinds import JobKind, JobOutcome
from app.kit.metrics import JOB_SECONDS
from app.models import Job

logger = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[JobOutcome]]


class UnknownJobKind(Exception):
    """A job of a kind no handler is registered for (runners never claim those)."""


class JobRegistry:
    def __init__(self) -> None:
        self._handlers: dict[JobKind, Handler] = {}

    def register(self, kind: JobKind, handler: Handler) -> None:
        """Route jobs of `kind` to `handler` (one handler per kind)."""
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind} is already registered")
        self._handlers[kind] = handler

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind.value for kind in self._handlers)

    async def run(self, job: Job) -> JobOutcome:
        """Run a claimed job with its kind's handler, timing it by kind and outcome."""
        try:
            kind = JobKind(job.kind)
            handler = self._handlers[kind]
        except (KeyError, ValueError) as exc:
            raise UnknownJobKind(job.kind) from exc
        started = time.perf_counter()
        outcome = "error"  # the handler raised (cancelled, or a bug past its own handling)
        try:
            result = await handler(job)
            outcome = result.status
            return result
        finally:
            JOB_SECONDS.labels(kind.value, outcome).observe(time.perf_counter() - started)
