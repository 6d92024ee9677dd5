"""Work that must outlive the request that started it (an audit entry after a disconnect)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger("cairn")

# The loop keeps only weak references to tasks; these are kept until they finish.
_running: set[asyncio.Task[None]] = set()


def run_detached(work: Coroutine[Any, Any, None], *, what: str) -> None:
    """Run `work` on the current loop independently of the caller's (cancelled) task; a
    failure is logged as `could not <what>`."""

    async def guarded() -> None:
        try:
            await work
        except Exception:
            logger.exception("could not %s", what)

    task = asyncio.get_running_loop().create_task(guarded())
    _running.add(task)
    task.add_done_callback(_running.discard)
