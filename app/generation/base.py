"""The generator protocol every backend implements, and the types it speaks.

The retriever and the chat service only see `Generator`: a list of chat messages in, the
answer (or its text deltas) out. Limits travel with every call; cancellation is a
`threading.Event` the caller sets (a client went away) and the backend checks between tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, runtime_checkable

from app.kit.errors import CairnError, RateLimited, ServiceUnavailable

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationLimits:
    """Per-call bounds. Build them from configuration with `limits.limits_from_settings`."""

    max_new_tokens: int = 512
    timeout_seconds: float = 30.0
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if self.temperature < 0:
            raise ValueError("temperature must not be negative")


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished answer with what an OpenAI-compatible response reports about it."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class GeneratorError(ServiceUnavailable):
    code = "generator_error"
    message = "The answer generator failed"


class GeneratorUnavailable(GeneratorError):
    """The configured model or backend cannot be loaded here (missing file, extra, device)."""

    code = "generator_unavailable"
    message = "The answer generator is not available"


class GenerationTimeout(CairnError):
    """The generation ran past `timeout_seconds`; `partial` holds what it produced by then."""

    status_code = 504
    code = "generation_timeout"
    message = "The answer took too long to generate"

    def __init__(self, message: str | None = None, *, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


class GeneratorBusy(RateLimited):
    """No slot for this generation: the queue is full or the wait ran out (429)."""

    code = "generator_busy"
    message = "Too many answers are being generated; try again shortly"

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        if retry_after is None:
            super().__init__(message)
            return
        super().__init__(
            message,
            headers={"Retry-After": str(retry_after)},
            details={"retry_after": retry_after},
        )


class AnswerInProgress(GeneratorBusy):
    """The user already has as many generations running or waiting as one user may."""

    code = "answer_in_progress"
    message = "An answer for you is still being generated; ask again once it has finished"


@runtime_checkable
class Generator(Protocol):
    """One backend. Implementations are safe to call from several threads at once."""

    name: str

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Generate the whole answer (blocking); a set `cancel` ends it early."""
        ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        """The answer as text deltas. Closing the iterator early (a client disconnect) stops
        the generation, as does setting `cancel`."""
        ...


class StopSignal:
    """What a backend checks between tokens: the caller's cancel event, our own stop (the
    consumer went away) and the deadline. The caller's event is only read, never set."""

    __slots__ = ("_caller", "_stopped", "deadline", "timed_out")

    def __init__(self, limits: GenerationLimits, cancel: threading.Event | None = None) -> None:
        self._caller = cancel
        self._stopped = threading.Event()
        self.deadline = time.monotonic() + limits.timeout_seconds
        self.timed_out = False

    def stop(self) -> None:
        self._stopped.set()

    @property
    def cancelled(self) -> bool:
        return self._stopped.is_set() or (self._caller is not None and self._caller.is_set())

    def should_stop(self) -> bool:
        if self.cancelled:
            return True
        if time.monotonic() >= self.deadline:
            self.timed_out = True
            return True
        return False

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def raise_if_timed_out(self, partial: str) -> None:
        if self.timed_out:
            raise GenerationTimeout(partial=partial)


def as_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Messages in the {"role", "content"} shape chat templates and OpenAI servers take."""
    return [{"role": m.role, "content": m.content} for m in messages]


_DONE = object()

Emit = Callable[[str], None]

_thread_ids = itertools.count(1)


async def iterate_in_thread(
    work: Callable[[Emit], None], signal: StopSignal, *, name: str
) -> AsyncGenerator[str, None]:
    """Run blocking generation `work(emit)` in a worker thread and yield what it emits here.

    Closing this iterator early (the consumer went away) stops the signal, so the work ends at
    its next check between tokens; the close then waits for the thread, so a concurrency slot
    is only given back once the compute has really stopped. An error raised by `work` (a
    timeout included) is raised here after the deltas that came before it.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | object] = asyncio.Queue()
    failure: list[BaseException] = []

    def put(item: str | object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            signal.stop()

    def run() -> None:
        try:
            work(put)
        except BaseException as exc:  # handed over to the consumer and re-raised there
            failure.append(exc)
        finally:
            put(_DONE)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if isinstance(item, str):
                yield item
            elif item is _DONE:
                break
        if failure:
            raise failure[0]
    finally:
        signal.stop()
        if thread.is_alive():
            await asyncio.to_thread(thread.join)


class InProcessGenerator(ABC):
    """A backend that decodes in this process with one blocking `_run`: `complete` calls it
    here, `stream` in a worker thread whose deltas it yields."""

    name: str
    #: names the generation threads (`<prefix>-<n>`), so they can be told apart
    thread_prefix: ClassVar[str]

    @abstractmethod
    def _run(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        signal: StopSignal,
        emit: Emit | None = None,
    ) -> Completion:
        """Generate until done or `signal` says stop, passing each text delta to `emit`."""

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """The whole answer; `cancel` or the timeout stops it after the current token."""
        return self._run(messages, limits, StopSignal(limits, cancel))

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        """Text deltas as they are decoded (decoding runs in a worker thread)."""
        signal = StopSignal(limits, cancel)

        def work(emit: Emit) -> None:
            self._run(messages, limits, signal, emit)

        name = f"{self.thread_prefix}-{next(_thread_ids)}"
        # aclosing: closing this stream closes the thread bridge at once (not whenever the
        # garbage collector gets to it), which stops and joins the generation thread.
        async with contextlib.aclosing(iterate_in_thread(work, signal, name=name)) as deltas:
            async for delta in deltas:
                yield delta
