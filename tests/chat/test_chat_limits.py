"""Generation limits as chat clients see them: a timeout is 504 (or an `error` event when
streaming), a full generator is 429, and neither leaves anything behind."""

from __future__ import annotations

import asyncio
import json

import httpx
from fastapi import FastAPI

from app.generation.provider import GeneratorProvider
from tests.chat.conftest import World
from tests.chat.doubles import StallingGenerator, limited
from tests.conftest import assert_error

CHAT = "/api/v1/tenants/hr/chat"
QUESTION = "How many days of paid vacation does every employee receive per year?"


def with_timeout(app: FastAPI, seconds: float) -> None:
    settings = app.state.settings
    app.state.settings = settings.model_copy(
        update={"generator": settings.generator.model_copy(update={"timeout_seconds": seconds})}
    )


async def test_a_slow_answer_times_out(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    stalling = StallingGenerator()
    app.state.generator = GeneratorProvider(app.state.settings, limited(stalling))
    with_timeout(app, 0.5)
    response = await client.post(CHAT, json={"question": QUESTION}, headers=world.users["viewer"])
    assert_error(response, 504, "generation_timeout")
    assert stalling.stopped.is_set()

    events = []
    async with client.stream(
        "POST", CHAT, json={"question": QUESTION, "stream": True}, headers=world.users["viewer"]
    ) as streamed:
        event = ""
        async for line in streamed.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line.split(":", 1)[1])))
    # It wrote (progress) but nothing it wrote was shown: it was never checked.
    assert events[0][0] == "progress"
    assert "delta" not in [kind for kind, _ in events]
    assert events[-1] == (
        "error",
        {
            "error": {
                "code": "generation_timeout",
                "message": "The answer took too long to generate",
            }
        },
    )
    # Neither attempt was stored as an answer.
    listed = await client.get(f"{CHAT}/sessions", headers=world.users["viewer"])
    assert listed.json()["total"] == 0


async def test_a_busy_generator_is_429(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    stalling = StallingGenerator()
    generator = limited(stalling, queue_timeout=0.3)
    app.state.generator = GeneratorProvider(app.state.settings, generator)
    with_timeout(app, 5.0)
    first = asyncio.create_task(
        client.post(CHAT, json={"question": QUESTION}, headers=world.users["viewer"])
    )
    assert await asyncio.to_thread(stalling.started.wait, 30)
    second = await client.post(CHAT, json={"question": QUESTION}, headers=world.users["both"])
    assert_error(second, 429, "generator_busy")
    assert_error(await first, 504, "generation_timeout")
    assert generator.slots.in_use == 0
