"""Which handler runs which kind of job. Runners (the in-process pool, the one Celery task)
claim only the kinds registered here and hand each job to its handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from app.jobs.kinds import JobKind, JobOutcome
from app.kit.metrics import JOB_SECONDS
from app.models import Job

logger = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[JobOutcome]]
# Extends a running job's lease; False once the job is no longer this worker's.
Renew = Callable[[Job], Awaitable[bool]]


class UnknownJobKind(Exception):
    """A job of a kind no handler is registered for (runners never claim those)."""


class JobRegistry:
    def __init__(self, renew: Renew | None = None, *, renew_every: float = 0.0) -> None:
        """`renew`, every `renew_every` seconds while a handler runs: the lease then says
        whether the worker process is alive, not whether a step of the job was quick. (A
        lease renewed only between steps lapses when one step is slow — a big batch on a busy
        machine — and another worker takes the job over, and the next one from it: the job is
        never finished.)"""
        self._handlers: dict[JobKind, Handler] = {}
        self._renew = renew
        self._renew_every = renew_every

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
        finished = asyncio.Event()
        keeper = asyncio.create_task(self._keep_leased(job, finished)) if self._renew else None
        try:
            result = await handler(job)
            outcome = result.status
            return result
        finally:
            finished.set()
            if keeper is not None:
                # Let a renewal in flight end its transaction rather than cancel it midway.
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            JOB_SECONDS.labels(kind.value, outcome).observe(time.perf_counter() - started)

    async def _keep_leased(self, job: Job, finished: asyncio.Event) -> None:
        """Renew the job's lease until the handler returns or the job is no longer ours
        (taken over: the handler finds that out itself at its next check of the job row)."""
        assert self._renew is not None
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), timeout=self._renew_every)
                return
            try:
                if not await self._renew(job):
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: the next round retries
                logger.warning("job %s: could not renew its lease", job.id, exc_info=True)
