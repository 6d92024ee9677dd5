"""Stop blocking work when the HTTP client goes away."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")

# How often a waiting request checks whether its client is still connected.
_POLL_SECONDS = 0.25


async def cancel_on_disconnect(
    request: Request, work: Callable[[threading.Event], Awaitable[T]]
) -> T:
    """Run `work(cancel)`, setting `cancel` as soon as the client disconnects, so work that
    runs in a thread (a generation) stops at its next check instead of finishing for nobody.
    The result (or error) of `work` is returned (raised) either way."""
    cancel = threading.Event()
    task = asyncio.ensure_future(work(cancel))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_POLL_SECONDS)
            if done:
                return task.result()
            if not cancel.is_set() and await request.is_disconnected():
                cancel.set()
    finally:
        if not task.done():
            # We were cancelled ourselves (server shutdown): stop the work too.
            cancel.set()
            task.cancel()
