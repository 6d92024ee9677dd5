"""The concurrency limit and the configured bounds, on a scripted backend."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.generation.base import (
    AnswerInProgress,
    ChatMessage,
    Completion,
    GenerationLimits,
    Generator,
    GeneratorBusy,
    StopSignal,
)
from app.generation.limits import (
    GenerationSlots,
    LimitedGenerator,
    Requester,
    limits_from_settings,
    queued_for,
)
from app.generation.loader import clear_cache, load_generator
from app.kit.settings import GeneratorSettings, OpenAIEndpointSettings, Settings

MESSAGES = [ChatMessage("user", "hello")]
LIMITS = GenerationLimits(max_new_tokens=4, timeout_seconds=10)


class ScriptedBackend:
    """Blocks every generation until `release` is set; counts how many run at once."""

    name = "scripted"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def _leave(self) -> None:
        with self._lock:
            self.running -= 1

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        self._enter()
        try:
            signal = StopSignal(limits, cancel)
            while not self.release.wait(0.01):
                if signal.should_stop():
                    break
            return Completion("done", "stop", 1, 1)
        finally:
            self._leave()

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        self._enter()
        try:
            yield "first"
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            yield "second"
        finally:
            self._leave()


def test_scripted_backend_satisfies_the_protocol() -> None:
    assert isinstance(ScriptedBackend(), Generator)


class TestSlots:
    def test_a_second_caller_is_refused_after_the_queue_timeout(self) -> None:
        backend = ScriptedBackend()
        limited = LimitedGenerator(backend, GenerationSlots(1, queue_timeout=0.2))
        first = threading.Thread(target=limited.complete, args=(MESSAGES, LIMITS))
        first.start()
        try:
            while backend.running == 0:
                time.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(GeneratorBusy) as refused:
                limited.complete(MESSAGES, LIMITS)
            assert refused.value.status_code == 429
            assert 0.15 <= time.monotonic() - started < 2
        finally:
            backend.release.set()
            first.join(5)
        assert limited.slots.in_use == 0

    def test_a_waiting_caller_runs_once_a_slot_frees(self) -> None:
        backend = ScriptedBackend()
        limited = LimitedGenerator(backend, GenerationSlots(2, queue_timeout=5))
        results: list[str] = []
        threads = [
            threading.Thread(target=lambda: results.append(limited.complete(MESSAGES, LIMITS).text))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        while backend.running < 2:
            time.sleep(0.01)
        time.sleep(0.1)
        assert backend.running == 2  # the third waits for a slot
        backend.release.set()
        for thread in threads:
            thread.join(5)
        assert results == ["done"] * 3
        assert backend.peak == 2

    async def test_streams_share_the_limit_with_blocking_calls(self) -> None:
        backend = ScriptedBackend()
        limited = LimitedGenerator(backend, GenerationSlots(1, queue_timeout=0.1))
        async with contextlib.aclosing(limited.stream(MESSAGES, LIMITS)) as stream:
            assert await anext(stream) == "first"
            assert limited.slots.in_use == 1
            with pytest.raises(GeneratorBusy):
                await asyncio.to_thread(limited.complete, MESSAGES, LIMITS)
            with pytest.raises(GeneratorBusy):
                async for _ in limited.stream(MESSAGES, LIMITS):
                    pass
        # Closing the stream early gave the slot back.
        assert limited.slots.in_use == 0
        backend.release.set()
        assert [d async for d in limited.stream(MESSAGES, LIMITS)] == ["first", "second"]
        assert backend.peak == 1

    async def test_waiting_does_not_block_the_event_loop(self) -> None:
        backend = ScriptedBackend()
        limited = LimitedGenerator(backend, GenerationSlots(1, queue_timeout=5))
        holder = limited.stream(MESSAGES, LIMITS)
        await anext(holder)
        second = limited.stream(MESSAGES, LIMITS)
        waiter = asyncio.create_task(anext(second))
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 10
        assert not waiter.done()
        await holder.aclose()
        assert await asyncio.wait_for(waiter, 2) == "first"
        await second.aclose()
        assert limited.slots.in_use == 0


async def queue_up(slots: GenerationSlots, who: Requester, served: list[Requester]) -> None:
    """Wait for a turn, note it, and give the slot straight back."""
    grant = await slots.acquire(who, hold_for=10)
    served.append(who)
    grant.release()


async def enqueue(
    slots: GenerationSlots, who: Requester, served: list[Requester]
) -> asyncio.Task[None]:
    """Start waiting for a turn; returns once the request has its place in the queue (or was
    refused one): taking a place is the task's first step, done before it first waits."""
    task = asyncio.create_task(queue_up(slots, who, served))
    for _ in range(3):
        await asyncio.sleep(0)
    return task


class TestFairQueue:
    """Issue 21, item 6: waiting requests are served in turn across tenants, then users."""

    async def test_another_tenant_is_served_before_a_floods_later_requests(self) -> None:
        slots = GenerationSlots(1, queue_timeout=30)
        running = await slots.acquire(Requester(1, 100), hold_for=10)
        served: list[Requester] = []
        flood = [await enqueue(slots, Requester(1, user), served) for user in range(101, 106)]
        other = await enqueue(slots, Requester(2, 200), served)
        running.release()
        await asyncio.gather(*flood, other)
        assert served == [
            Requester(1, 101),
            Requester(2, 200),  # second, not after tenant 1's five
            Requester(1, 102),
            Requester(1, 103),
            Requester(1, 104),
            Requester(1, 105),
        ]
        assert (slots.in_use, slots.waiting) == (0, 0)

    async def test_users_of_one_tenant_take_turns(self) -> None:
        slots = GenerationSlots(1, queue_timeout=30)
        running = await slots.acquire(Requester(1, 1), hold_for=10)
        served: list[Requester] = []
        tasks = [await enqueue(slots, Requester(1, 1), served) for _ in range(3)]
        tasks.append(await enqueue(slots, Requester(1, 2), served))
        running.release()
        await asyncio.gather(*tasks)
        assert [who.user_id for who in served] == [1, 2, 1, 1]

    async def test_a_user_with_an_answer_in_flight_is_refused_at_once(self) -> None:
        slots = GenerationSlots(1, queue_timeout=30, per_user=1)
        running = await slots.acquire(Requester(1, 1), hold_for=20)
        with pytest.raises(AnswerInProgress) as refused:
            slots.check(Requester(1, 1))
        with pytest.raises(AnswerInProgress):
            await slots.acquire(Requester(1, 1))
        assert refused.value.status_code == 429
        assert refused.value.code == "answer_in_progress"
        assert 1 <= int((refused.value.headers or {})["Retry-After"]) <= 20
        # Another user of the same tenant still gets a place in the queue.
        served: list[Requester] = []
        other = await enqueue(slots, Requester(1, 2), served)
        assert slots.waiting == 1
        running.release()
        await other
        assert served == [Requester(1, 2)]
        slots.check(Requester(1, 1))  # nothing in flight any more

    def test_queued_for_refuses_before_the_answer_starts(self) -> None:
        backend = ScriptedBackend()
        limited = LimitedGenerator(backend, GenerationSlots(1, queue_timeout=30, per_user=1))
        grant = limited.slots.acquire_blocking(Requester(1, 1), hold_for=5)
        with pytest.raises(AnswerInProgress):
            queued_for(limited, Requester(1, 1))
        assert queued_for(limited, Requester(2, 1)).name == "scripted"
        grant.release()

    async def test_a_full_queue_refuses_the_tenant_holding_most_of_it(self) -> None:
        slots = GenerationSlots(1, queue_timeout=30, max_waiting=3)
        running = await slots.acquire(Requester(9, 9), hold_for=10)
        served: list[Requester] = []
        flood = [await enqueue(slots, Requester(1, user), served) for user in (1, 2, 3)]
        # Tenant 1 holds the whole queue: its newest waiter makes room for tenant 2.
        other = await enqueue(slots, Requester(2, 1), served)
        with pytest.raises(GeneratorBusy) as pushed_out:
            await flood[2]
        assert int((pushed_out.value.headers or {})["Retry-After"]) >= 1
        # Tenant 1 still holds more than tenant 2: its next newcomer is refused itself.
        with pytest.raises(GeneratorBusy) as refused:
            await slots.acquire(Requester(1, 4))
        assert refused.value.code == "generator_busy"
        running.release()
        await asyncio.gather(flood[0], flood[1], other)
        assert served == [Requester(1, 1), Requester(2, 1), Requester(1, 2)]

    async def test_a_wait_past_the_bound_is_429_with_retry_after(self) -> None:
        slots = GenerationSlots(1, queue_timeout=0.05)
        running = await slots.acquire(Requester(1, 1), hold_for=7)
        with pytest.raises(GeneratorBusy) as refused:
            await slots.acquire(Requester(2, 2))
        assert 1 <= int((refused.value.headers or {})["Retry-After"]) <= 7
        assert refused.value.details == {"retry_after": int(refused.value.headers["Retry-After"])}  # type: ignore[index]
        assert slots.waiting == 0
        running.release()
        assert slots.in_use == 0

    async def test_a_waiter_that_goes_away_leaves_the_queue(self) -> None:
        slots = GenerationSlots(1, queue_timeout=30)
        running = await slots.acquire(Requester(1, 1), hold_for=10)
        served: list[Requester] = []
        gone = await enqueue(slots, Requester(2, 2), served)
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        assert slots.waiting == 0
        running.release()
        assert (slots.in_use, served) == (0, [])

    def test_waiting_for_a_turn_holds_no_thread(self) -> None:
        # A queue of blocked threads would starve every other to_thread user of the pool.
        # Its own loop (the tests share one), with a default pool of two threads.
        backend = ScriptedBackend()
        limited = LimitedGenerator(backend, GenerationSlots(1, queue_timeout=30))

        async def scenario() -> list[str]:
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))
            answers = [
                asyncio.create_task(limited.acomplete(MESSAGES, LIMITS, who=Requester(1, user)))
                for user in range(4)
            ]
            while backend.running == 0:
                await asyncio.sleep(0.01)
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 10) == "free"
            backend.release.set()
            return [c.text for c in await asyncio.gather(*answers)]

        assert asyncio.run(scenario()) == ["done"] * 4
        assert (backend.peak, limited.slots.in_use) == (1, 0)


class TestConfiguredLimits:
    def test_a_request_may_ask_for_fewer_tokens_never_more(self) -> None:
        settings = GeneratorSettings(max_new_tokens=100, timeout_seconds=7, temperature=0.5)
        assert limits_from_settings(settings).max_new_tokens == 100
        assert limits_from_settings(settings, max_new_tokens=10).max_new_tokens == 10
        assert limits_from_settings(settings, max_new_tokens=10_000).max_new_tokens == 100
        limits = limits_from_settings(settings)
        assert (limits.timeout_seconds, limits.temperature) == (7, 0.5)

    def test_settings_refuse_mismatched_quantization_and_device(self) -> None:
        with pytest.raises(ValueError, match="CPU-only"):
            GeneratorSettings(quantization="int8", device="cuda")
        with pytest.raises(ValueError, match="needs a CUDA device"):
            GeneratorSettings(quantization="bnb4", device="cpu")
        with pytest.raises(ValueError, match="openai.base_url"):
            GeneratorSettings(backend="openai")

    def test_defaults_come_from_the_toml(self) -> None:
        config = Settings().generator
        assert (config.backend, config.quantization, config.model_path) == (
            "transformers",
            "int8",
            None,
        )
        assert config.temperature == 0

    def test_environment_overrides_nested_keys(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CAIRN_GENERATOR__MAX_CONCURRENT", "3")
        monkeypatch.setenv("CAIRN_GENERATOR__OPENAI__MODEL", "deepseek-chat")
        config = Settings().generator
        assert config.max_concurrent == 3
        assert config.openai.model == "deepseek-chat"

    def test_the_queue_bounds_come_from_the_toml(self) -> None:
        slots = GenerationSlots.from_settings(Settings().generator)
        assert (slots.size, slots.max_waiting, slots.per_user) == (1, 8, 1)
        assert slots.queue_timeout == 30

    def test_loader_caches_one_generator_per_configuration(self, tmp_path: Path) -> None:
        openai = OpenAIEndpointSettings(base_url="http://127.0.0.1:9/v1", model="m")
        generator = GeneratorSettings(backend="openai", openai=openai, max_concurrent=4)
        settings = Settings(data_dir=tmp_path, generator=generator)
        try:
            first = load_generator(settings)
            assert first is load_generator(settings)
            assert first.name == "openai:m"
            assert first.slots.size == 4
        finally:
            clear_cache()
