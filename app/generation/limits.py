"""Limits shared by every backend: how many generations run at once, how long one may wait
for a slot, and the per-call bounds taken from configuration."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence

from app.generation.base import (
    ChatMessage,
    Completion,
    GenerationLimits,
    Generator,
    GeneratorBusy,
)
from app.kit.metrics import (
    GENERATION_FIRST_TOKEN,
    GENERATION_SECONDS,
    GENERATION_TOKENS,
    RATE_LIMIT_REJECTIONS,
)
from app.kit.settings import GeneratorSettings

# How often an async waiter looks for a free slot. Slots are held for seconds (a whole
# generation), so polling costs nothing measurable and keeps one lock for threads and tasks.
_POLL_SECONDS = 0.02


def limits_from_settings(
    settings: GeneratorSettings, *, max_new_tokens: int | None = None
) -> GenerationLimits:
    """The configured limits; a request may ask for fewer new tokens, never for more."""
    cap = settings.max_new_tokens
    return GenerationLimits(
        max_new_tokens=min(max_new_tokens, cap) if max_new_tokens else cap,
        timeout_seconds=settings.timeout_seconds,
        temperature=settings.temperature,
        top_p=settings.top_p,
    )


class GenerationSlots:
    """At most `size` generations at once, shared by threads and asyncio tasks.

    A caller waits up to `queue_timeout` seconds for a slot, then gets `GeneratorBusy` (429).
    """

    def __init__(self, size: int, queue_timeout: float) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.queue_timeout = queue_timeout
        self._free = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    def _taken(self) -> None:
        with self._lock:
            self._in_use += 1

    def _release(self) -> None:
        with self._lock:
            self._in_use -= 1
        self._free.release()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a slot for the duration of the block (blocking wait)."""
        if not self._free.acquire(timeout=self.queue_timeout):
            RATE_LIMIT_REJECTIONS.labels("generator_slots").inc()
            raise GeneratorBusy()
        self._taken()
        try:
            yield
        finally:
            self._release()

    @contextlib.asynccontextmanager
    async def hold_async(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block, waiting without blocking the loop."""
        deadline = time.monotonic() + self.queue_timeout
        while not self._free.acquire(blocking=False):
            if time.monotonic() >= deadline:
                RATE_LIMIT_REJECTIONS.labels("generator_slots").inc()
                raise GeneratorBusy()
            await asyncio.sleep(_POLL_SECONDS)
        self._taken()
        try:
            yield
        finally:
            self._release()


class LimitedGenerator:
    """A backend behind the concurrency limit; what `load_generator` hands out. Every answer
    of every caller passes here, so this is where generation is measured."""

    def __init__(self, backend: Generator, slots: GenerationSlots) -> None:
        self.backend = backend
        self.slots = slots
        self.name = backend.name
        # The backend family ("transformers", "llamacpp", "openai"): a bounded metric label.
        self.family = backend.name.partition(":")[0]

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """The whole answer, once a slot is free."""
        started = time.monotonic()
        with self.slots.hold():
            completion = self.backend.complete(messages, limits, cancel)
        GENERATION_SECONDS.labels(self.family).observe(time.monotonic() - started)
        GENERATION_TOKENS.labels(self.family).inc(completion.completion_tokens)
        return completion

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        """Text deltas, once a slot is free; the slot is held until the backend has stopped."""
        started = time.monotonic()
        deltas = 0
        try:
            async with self.slots.hold_async():
                # aclosing: when our consumer stops early, the backend's stream is closed (and
                # its generation stopped) before the slot is given back.
                async with contextlib.aclosing(self.backend.stream(messages, limits, cancel)) as it:
                    async for delta in it:
                        if deltas == 0:
                            GENERATION_FIRST_TOKEN.labels(self.family).observe(
                                time.monotonic() - started
                            )
                        deltas += 1
                        yield delta
        finally:
            if deltas:
                GENERATION_TOKENS.labels(self.family).inc(deltas)
                GENERATION_SECONDS.labels(self.family).observe(time.monotonic() - started)
