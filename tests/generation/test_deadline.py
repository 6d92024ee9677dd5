"""Issue 21, item 6: one generation has a wall-clock cap well below a request's timeout; a
generation slow per token is stopped there, whichever way it is asked for, and gives its slot
back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.generation.base import ChatMessage, GenerationLimits, GenerationTimeout
from app.generation.limits import (
    GenerationSlots,
    LimitedGenerator,
    Requester,
    limits_from_settings,
)
from app.kit.settings import Settings
from tests.generation.helpers import drain
from tests.generation.slow import SlowGenerator

MESSAGES = [ChatMessage("user", "How many days of paid vacation?")]
# Far more tokens than the cap lets an endless answer reach.
CAPPED = GenerationLimits(max_new_tokens=1_000_000, timeout_seconds=0.3)


def slow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("slow-")]


def test_the_default_cap_is_well_below_a_request_timeout() -> None:
    generator = Settings().generator
    assert generator.timeout_seconds <= 45
    assert limits_from_settings(generator).timeout_seconds == generator.timeout_seconds
    assert GenerationLimits().timeout_seconds <= 45


def test_an_endless_answer_is_stopped_at_the_cap() -> None:
    slow = SlowGenerator(endless=True, token_seconds=0.005)
    limited = LimitedGenerator(slow, GenerationSlots(1, queue_timeout=5))
    with pytest.raises(GenerationTimeout) as raised:
        limited.complete(MESSAGES, CAPPED)
    # It returned at all: the cap ended an answer that would never end by itself.
    assert slow.timed_out == [True]
    assert raised.value.status_code == 504
    assert raised.value.partial.startswith("Every employee")
    assert slow.decoded[0] == len(raised.value.partial.split(" "))
    assert limited.slots.in_use == 0


async def test_an_endless_stream_is_stopped_at_the_cap() -> None:
    slow = SlowGenerator(endless=True, token_seconds=0.005)
    limited = LimitedGenerator(slow, GenerationSlots(1, queue_timeout=5))
    deltas: list[str] = []
    with pytest.raises(GenerationTimeout):
        await drain(limited.stream(MESSAGES, CAPPED, who=Requester(1, 1)), deltas)
    assert deltas  # what was decoded went out before the error
    assert slow.timed_out == [True]
    assert limited.slots.in_use == 0
    await asyncio.sleep(0)
    assert not slow_threads()


async def test_an_endless_answer_asked_without_a_thread_is_stopped_at_the_cap() -> None:
    slow = SlowGenerator(endless=True, token_seconds=0.005)
    limited = LimitedGenerator(slow, GenerationSlots(1, queue_timeout=5))
    with pytest.raises(GenerationTimeout):
        await limited.acomplete(MESSAGES, CAPPED, who=Requester(1, 1))
    assert slow.timed_out == [True]
    assert limited.slots.in_use == 0


def test_a_prefill_past_the_cap_ends_at_the_first_check() -> None:
    # Prefill cannot be interrupted (that is what the prompt's token budget bounds); the
    # first check after it stops the generation before any token.
    slow = SlowGenerator(prefill_seconds=0.05)
    with pytest.raises(GenerationTimeout) as raised:
        slow.complete(MESSAGES, GenerationLimits(timeout_seconds=0.1))
    assert slow.decoded == [0]
    assert raised.value.partial == ""


def test_an_answer_within_the_cap_is_whole() -> None:
    slow = SlowGenerator(token_seconds=0.001)
    completion = slow.complete(MESSAGES, GenerationLimits(timeout_seconds=30))
    assert completion.text == slow.answer
    assert completion.finish_reason == "stop"
