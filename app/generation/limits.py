"""Limits shared by every backend: how many generations run at once, who waits for a slot and
in which order, and the per-call bounds taken from configuration.

The queue is fair. When a slot frees, the tenants with a generation waiting take turns (round
robin), and within a tenant its users do, so one tenant's flood delays another tenant's
question by at most one generation per tenant ahead of it. A user has at most `per_user`
generations running or waiting; one more is refused at once. The queue is bounded in length
(a full queue refuses the newest waiter of the tenant holding most of it before it refuses a
tenant holding less) and in time (`queue_timeout`). Every refusal is 429 with Retry-After.

The queue lives in this process: each API replica has its own slots and its own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from app.generation.base import (
    AnswerInProgress,
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


@dataclass(frozen=True, slots=True)
class Requester:
    """Whom a generation is for: the queue takes turns between tenants, then between users.
    `user_id` None: the operator at the console."""

    tenant_id: int | None
    user_id: int | None


# The queue's place for generations asked without a requester (benchmarks, tools): each such
# call is a user of its own, so none of them is refused for another's.
_NO_TENANT = ("no-tenant",)

State = Literal["waiting", "granted", "refused"]


class Grant:
    """A slot held for one generation; `release` gives it to the next in turn (once)."""

    __slots__ = ("_slots", "ends_by", "released", "tenant", "user")

    def __init__(
        self, slots: GenerationSlots, tenant: Hashable, user: Hashable, ends_by: float
    ) -> None:
        self._slots = slots
        self.tenant = tenant
        self.user = user
        # When the generation will have reached its wall-clock cap (Retry-After hints).
        self.ends_by = ends_by
        self.released = False

    def release(self) -> None:
        self._slots._release(self)


class _Waiter:
    __slots__ = (
        "grant",
        "hold_for",
        "refusal",
        "seq",
        "state",
        "tenant",
        "user",
        "wait_until",
        "wake",
    )

    def __init__(
        self,
        tenant: Hashable,
        user: Hashable,
        *,
        seq: int,
        hold_for: float,
        wait_until: float,
        wake: Callable[[], None],
    ) -> None:
        self.tenant = tenant
        self.user = user
        self.seq = seq
        self.hold_for = hold_for
        self.wait_until = wait_until
        self.wake = wake
        self.state: State = "waiting"
        self.grant: Grant | None = None
        self.refusal: GeneratorBusy | None = None


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class GenerationSlots:
    """At most `size` generations at once, shared by threads and asyncio tasks, handed out
    in turn across tenants and users (see the module docstring).

    A caller waits up to `queue_timeout` seconds. `max_waiting` bounds the queue's length and
    `per_user` what one user may have running or waiting; None: unbounded (the loader sets
    both from configuration, `from_settings`).
    """

    def __init__(
        self,
        size: int,
        queue_timeout: float,
        *,
        max_waiting: int | None = None,
        per_user: int | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        if per_user is not None and per_user < 1:
            raise ValueError("per_user must be at least 1")
        self.size = size
        self.queue_timeout = queue_timeout
        self.max_waiting = max_waiting
        self.per_user = per_user
        self._lock = threading.Lock()
        self._free = size
        self._held: list[Grant] = []
        # tenant -> user -> that user's waiters, oldest first. Both levels are in turn order:
        # whoever was served goes to the back.
        self._queue: OrderedDict[Hashable, OrderedDict[Hashable, deque[_Waiter]]] = OrderedDict()
        self._waiting = 0
        self._seq = itertools.count()

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> GenerationSlots:
        return cls(
            settings.max_concurrent,
            settings.queue_timeout_seconds,
            max_waiting=settings.max_waiting,
            per_user=settings.max_per_user,
        )

    @property
    def in_use(self) -> int:
        return self.size - self._free

    @property
    def waiting(self) -> int:
        return self._waiting

    # -- the queue (every method below runs under self._lock) --------------------------------

    @staticmethod
    def _keys(who: Requester | None) -> tuple[Hashable, Hashable]:
        if who is None:
            return _NO_TENANT, object()
        return who.tenant_id, who.user_id

    def _waiters(self, tenant: Hashable, user: Hashable) -> deque[_Waiter]:
        users = self._queue.get(tenant)
        return users.get(user, deque()) if users is not None else deque()

    def _users_count(self, tenant: Hashable, user: Hashable) -> int:
        running = sum(1 for g in self._held if g.tenant == tenant and g.user == user)
        return running + len(self._waiters(tenant, user))

    def _tenant_waiting(self, tenant: Hashable) -> int:
        users = self._queue.get(tenant)
        return sum(len(w) for w in users.values()) if users is not None else 0

    def _soonest_free(self, now: float) -> int:
        """Seconds until the first running generation reaches its cap (Retry-After)."""
        ends = [g.ends_by for g in self._held]
        return _retry_after(min(ends) - now) if ends else 1

    def _user_retry(self, tenant: Hashable, user: Hashable, now: float) -> int:
        """Seconds until the user's own generation has ended or given up waiting."""
        ends = [g.ends_by for g in self._held if g.tenant == tenant and g.user == user]
        ends += [w.wait_until for w in self._waiters(tenant, user)]
        return _retry_after(min(ends) - now) if ends else 1

    def _refuse(self, refusal: GeneratorBusy) -> GeneratorBusy:
        RATE_LIMIT_REJECTIONS.labels("generator_slots").inc()
        return refusal

    def _check_user(self, tenant: Hashable, user: Hashable, now: float) -> None:
        if self.per_user is not None and self._users_count(tenant, user) >= self.per_user:
            raise self._refuse(AnswerInProgress(retry_after=self._user_retry(tenant, user, now)))

    def _grant(self, tenant: Hashable, user: Hashable, hold_for: float, now: float) -> Grant:
        self._free -= 1
        grant = Grant(self, tenant, user, now + hold_for)
        self._held.append(grant)
        return grant

    def _enqueue(self, waiter: _Waiter) -> None:
        users = self._queue.setdefault(waiter.tenant, OrderedDict())
        users.setdefault(waiter.user, deque()).append(waiter)
        self._waiting += 1

    def _unqueue(self, waiter: _Waiter) -> None:
        users = self._queue[waiter.tenant]
        waiters = users[waiter.user]
        waiters.remove(waiter)
        self._waiting -= 1
        if not waiters:
            del users[waiter.user]
        if not users:
            del self._queue[waiter.tenant]

    def _push_out(self, tenant: Hashable, now: float) -> bool:
        """Make room in a full queue by refusing the newest waiter of the tenant holding the
        most of it, when that is more than the newcomer's tenant would hold once admitted."""
        if not self._queue:
            return False
        largest = max(self._queue, key=self._tenant_waiting)
        if largest == tenant or self._tenant_waiting(largest) <= self._tenant_waiting(tenant) + 1:
            return False
        users = self._queue[largest]
        # Within that tenant: the user with the most waiting, the newest waiter among ties.
        user = max(users, key=lambda u: (len(users[u]), users[u][-1].seq))
        victim = users[user][-1]
        self._unqueue(victim)
        victim.state = "refused"
        victim.refusal = self._refuse(GeneratorBusy(retry_after=self._soonest_free(now)))
        victim.wake()
        return True

    def _dispatch(self, now: float) -> None:
        """Hand free slots to the waiters whose turn it is."""
        while self._free > 0 and self._queue:
            tenant, users = next(iter(self._queue.items()))
            user, waiters = next(iter(users.items()))
            waiter = waiters[0]
            self._unqueue(waiter)
            # Served: to the back of the turn order (of its tenant, and its tenant of all).
            if user in users:
                users.move_to_end(user)
            if tenant in self._queue:
                self._queue.move_to_end(tenant)
            waiter.grant = self._grant(tenant, user, waiter.hold_for, now)
            waiter.state = "granted"
            waiter.wake()

    def _release(self, grant: Grant) -> None:
        with self._lock:
            if grant.released:
                return
            grant.released = True
            self._held.remove(grant)
            self._free += 1
            self._dispatch(time.monotonic())

    def _enter(
        self, who: Requester | None, hold_for: float, wake: Callable[[], None]
    ) -> Grant | _Waiter:
        """A slot at once, or a place in the queue; refused when the user has all the
        generations one user may have, or when the queue is full."""
        tenant, user = self._keys(who)
        now = time.monotonic()
        with self._lock:
            self._check_user(tenant, user, now)
            if self._free > 0 and not self._queue:
                return self._grant(tenant, user, hold_for, now)
            if (
                self.max_waiting is not None
                and self._waiting >= self.max_waiting
                and not self._push_out(tenant, now)
            ):
                raise self._refuse(GeneratorBusy(retry_after=self._soonest_free(now)))
            waiter = _Waiter(
                tenant,
                user,
                seq=next(self._seq),
                hold_for=hold_for,
                wait_until=now + self.queue_timeout,
                wake=wake,
            )
            self._enqueue(waiter)
            return waiter

    def _settle(self, waiter: _Waiter) -> Grant:
        """What became of a waiter once woken or out of time: its slot, or the refusal."""
        with self._lock:
            if waiter.state == "granted" and waiter.grant is not None:
                return waiter.grant
            if waiter.state == "refused" and waiter.refusal is not None:
                raise waiter.refusal
            self._unqueue(waiter)
            waiter.state = "refused"
            raise self._refuse(GeneratorBusy(retry_after=self._soonest_free(time.monotonic())))

    def _abandon(self, waiter: _Waiter) -> None:
        """The waiter went away (cancelled): leave the queue, or pass on a slot just granted."""
        with self._lock:
            state = waiter.state
            if state == "waiting":
                self._unqueue(waiter)
                waiter.state = "refused"
        if state == "granted" and waiter.grant is not None:
            waiter.grant.release()

    # -- what callers use ---------------------------------------------------------------------

    def check(self, who: Requester) -> None:
        """Refuse now (429 answer_in_progress) when `who` already has all the generations one
        user may have: before an answer starts, so a streamed one is refused with a status."""
        tenant, user = self._keys(who)
        with self._lock:
            self._check_user(tenant, user, time.monotonic())

    def acquire_blocking(self, who: Requester | None = None, *, hold_for: float = 0.0) -> Grant:
        """A slot, waiting in this thread for its turn."""
        woken = threading.Event()
        entered = self._enter(who, hold_for, woken.set)
        if isinstance(entered, Grant):
            return entered
        woken.wait(max(0.0, entered.wait_until - time.monotonic()))
        return self._settle(entered)

    async def acquire(self, who: Requester | None = None, *, hold_for: float = 0.0) -> Grant:
        """A slot, waiting for its turn without blocking the event loop."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not woken.done():
                woken.set_result(None)

        def wake() -> None:
            # Called under the queue's lock, from whichever thread released a slot.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(resolve)

        entered = self._enter(who, hold_for, wake)
        if isinstance(entered, Grant):
            return entered
        try:
            timeout = max(0.0, entered.wait_until - time.monotonic())
            await asyncio.wait_for(asyncio.shield(woken), timeout)
        except TimeoutError:
            pass
        except BaseException:
            self._abandon(entered)
            raise
        return self._settle(entered)

    @contextlib.contextmanager
    def hold(self, who: Requester | None = None, *, hold_for: float = 0.0) -> Iterator[None]:
        """Hold a slot for the duration of the block (blocking wait)."""
        grant = self.acquire_blocking(who, hold_for=hold_for)
        try:
            yield
        finally:
            grant.release()

    @contextlib.asynccontextmanager
    async def hold_async(
        self, who: Requester | None = None, *, hold_for: float = 0.0
    ) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block, waiting without blocking the loop."""
        grant = await self.acquire(who, hold_for=hold_for)
        try:
            yield
        finally:
            grant.release()


class LimitedGenerator:
    """A backend behind the concurrency limit; what `load_generator` hands out. Every answer
    of every caller passes here, so this is where generation is measured."""

    def __init__(self, backend: Generator, slots: GenerationSlots) -> None:
        self.backend = backend
        self.slots = slots
        self.name = backend.name
        # The backend family ("transformers", "llamacpp", "openai"): a bounded metric label.
        self.family = backend.name.partition(":")[0]

    def _measured(self, started: float, completion: Completion) -> Completion:
        GENERATION_SECONDS.labels(self.family).observe(time.monotonic() - started)
        GENERATION_TOKENS.labels(self.family).inc(completion.completion_tokens)
        return completion

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
        *,
        who: Requester | None = None,
    ) -> Completion:
        """The whole answer, once it is this caller's turn (blocking)."""
        started = time.monotonic()
        with self.slots.hold(who, hold_for=limits.timeout_seconds):
            completion = self.backend.complete(messages, limits, cancel)
        return self._measured(started, completion)

    async def acomplete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
        *,
        who: Requester | None = None,
    ) -> Completion:
        """The whole answer, generated in a worker thread once it is this caller's turn.

        Waiting holds no thread: a queue of blocked threads would starve every other
        `to_thread` user of the default pool (password hashing, file writes). The slot is
        given back when the thread has finished, even when this caller was cancelled first
        (`cancel` is what stops the generation early).
        """
        started = time.monotonic()
        grant = await self.slots.acquire(who, hold_for=limits.timeout_seconds)
        try:
            run = functools.partial(
                contextvars.copy_context().run, self.backend.complete, messages, limits, cancel
            )
            work = asyncio.get_running_loop().run_in_executor(None, run)
        except BaseException:
            grant.release()
            raise

        def done(future: asyncio.Future[Completion]) -> None:
            grant.release()
            if not future.cancelled():
                future.exception()  # retrieved: an abandoned failure is not logged as lost

        work.add_done_callback(done)
        return self._measured(started, await asyncio.shield(work))

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
        *,
        who: Requester | None = None,
    ) -> AsyncGenerator[str, None]:
        """Text deltas, once it is this caller's turn; the slot is held until the backend has
        stopped."""
        started = time.monotonic()
        deltas = 0
        try:
            async with self.slots.hold_async(who, hold_for=limits.timeout_seconds):
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


class QueuedGenerator:
    """A limited generator as one requester's calls reach it: every call queues under their
    name."""

    def __init__(self, limited: LimitedGenerator, who: Requester) -> None:
        self.limited = limited
        self.who = who
        self.name = limited.name
        # The backend, for what is read from it (its tokenizer: app/generation/tokens.py).
        self.backend = limited.backend

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        return self.limited.complete(messages, limits, cancel, who=self.who)

    async def acomplete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        return await self.limited.acomplete(messages, limits, cancel, who=self.who)

    def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        return self.limited.stream(messages, limits, cancel, who=self.who)


def queued_for(generator: Generator, who: Requester) -> Generator:
    """`generator` as `who`'s calls reach it, refusing at once (429 answer_in_progress) when
    they already have all the generations one user may have. A generator outside the limit
    (a test double, a wrapper) is returned as it is."""
    if isinstance(generator, LimitedGenerator):
        generator.slots.check(who)
        return QueuedGenerator(generator, who)
    return generator


async def complete_async(
    generator: Generator,
    messages: Sequence[ChatMessage],
    limits: GenerationLimits,
    cancel: threading.Event | None = None,
) -> Completion:
    """The whole answer without blocking the event loop; behind the limit, the wait for a
    slot holds no thread (`LimitedGenerator.acomplete`)."""
    if isinstance(generator, LimitedGenerator | QueuedGenerator):
        return await generator.acomplete(messages, limits, cancel)
    return await asyncio.to_thread(generator.complete, messages, limits, cancel)
