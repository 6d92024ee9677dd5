"""The concurrency limit and the configured bounds, on a scripted backend."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import pytest

from app.generation.base import (
    ChatMessage,
    Completion,
    GenerationLimits,
    Generator,
    GeneratorBusy,
    StopSignal,
)
from app.generation.limits import GenerationSlots, LimitedGenerator, limits_from_settings
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
