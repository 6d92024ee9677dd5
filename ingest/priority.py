"""Ingestion's CPU work at a lower OS scheduling priority than the requests beside it.

On the embedded default the API answers searches and chats on the same cores the in-process
workers parse and embed on; a bulk upload would otherwise take its share of every core for
as long as it runs. The pipeline runs its CPU-bound steps (reading, parsing, chunking,
embedding) on the threads of a `BackgroundThreads` pool whose Linux nice value is raised
when each thread starts, and which (by default) join Linux's SCHED_IDLE class. Linux
schedules threads, not processes, and a thread inherits its creator's nice value and class:
the OpenMP team the embedding engine starts from such a thread (its
threads are per calling thread in libgomp) runs at the same lower priority, while a query
embedded on a request thread keeps the normal one. The scheduler still gives ingestion
every cycle that requests leave idle, so an idle box ingests as fast as before.

Nice 10 alone still gives ingestion about a tenth of each core beside a request, and that
tenth costs a chat answer far more than a tenth: the generator's threads meet at a barrier
after every operation, so one of them preempted for a few milliseconds holds up the others
(`cairn bench serve` measured chat p95 2.2x, search 2.9x, under a 2,000-document import).
SCHED_IDLE threads run only when no other thread wants the core and are preempted at once
when one wakes. A thread may put itself in that class without privileges, and the threads it
starts inherit it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

MAX_NICE = 19


def thread_nice(native_id: int | None = None) -> int:
    """The nice value of a thread (this one by default); 0 where threads have none."""
    if not hasattr(os, "getpriority"):
        return 0
    return os.getpriority(os.PRIO_PROCESS, native_id or threading.get_native_id())


def idle_class_available() -> bool:
    return hasattr(os, "SCHED_IDLE") and hasattr(os, "sched_setscheduler")


def this_thread_is_idle_class() -> bool:
    """Whether this thread is in SCHED_IDLE (False where there is no such class)."""
    return idle_class_available() and os.sched_getscheduler(0) == os.SCHED_IDLE


def lower_this_thread(increment: int, idle: bool = False) -> int:
    """Raise this thread's nice value by `increment` (capped at 19); the resulting value.

    On Linux `setpriority(PRIO_PROCESS, tid)` acts on one thread. Raising one's own nice value
    needs no privilege; it can never be lowered back, which is why the pool's threads are
    its own and never serve requests."""
    if idle and idle_class_available():
        try:
            # pid 0 is the calling thread on Linux.
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            logger.warning("could not put an ingestion thread in SCHED_IDLE: %s", exc)
    if increment <= 0 or not hasattr(os, "setpriority"):
        return thread_nice()
    tid = threading.get_native_id()
    target = min(MAX_NICE, thread_nice(tid) + increment)
    try:
        os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as exc:  # a sandbox may forbid it: ingestion still works, just not lowered
        logger.warning("could not lower the priority of an ingestion thread: %s", exc)
    return thread_nice(tid)


class BackgroundThreads:
    """Threads for ingestion's CPU work, `nice` steps below the process (0: not lowered), and
    in SCHED_IDLE when `idle`."""

    def __init__(self, nice: int, workers: int, *, idle: bool = False) -> None:
        self.nice = nice
        self.idle = idle
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, workers),
            thread_name_prefix="cairn-ingest",
            initializer=lower_this_thread,
            initargs=(nice, idle),
        )

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on one of the pool's threads, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._executor.shutdown(wait=False, cancel_futures=True)
