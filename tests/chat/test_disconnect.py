"""A client that hangs up stops its generation: streamed (chat SSE and OpenAI chunks) and not
streamed, over a real socket. The stalling double produces tokens until it is told to stop,
so only the disconnect can end it before its 120 s timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from app.generation.limits import LimitedGenerator
from tests.chat.doubles import StallingGenerator, limited
from tests.chat.served import Served, serve
from tests.conftest import make_settings

QUESTION = "How many days of paid vacation does every employee receive per year?"


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    settings = make_settings(database_url, tmp_path / "data")
    async with serve(settings, limited(StallingGenerator())) as live:
        yield live


def stalling(served: Served) -> tuple[StallingGenerator, LimitedGenerator]:
    generator = limited(StallingGenerator())
    served.use(generator)
    backend = generator.backend
    assert isinstance(backend, StallingGenerator)
    return backend, generator


async def stops(backend: StallingGenerator, generator: LimitedGenerator) -> None:
    """The generation ends and gives its slot back within seconds of the hang-up."""
    assert await asyncio.to_thread(backend.stopped.wait, 10), "generation still running"
    for _ in range(100):
        if generator.slots.in_use == 0:
            break
        await asyncio.sleep(0.05)
    assert generator.slots.in_use == 0
    emitted = backend.emitted
    await asyncio.sleep(0.3)
    assert backend.emitted == emitted, "tokens are still being produced"


async def test_closing_a_chat_stream(served: Served) -> None:
    backend, generator = stalling(served)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        async with client.stream(
            "POST",
            "/api/v1/tenants/hr/chat",
            json={"question": QUESTION, "stream": True},
            headers=served.users["viewer"],
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break
    await stops(backend, generator)
    # Nothing half-said was stored as an answer.
    listed = await served.client.get(
        "/api/v1/tenants/hr/chat/sessions", headers=served.users["viewer"]
    )
    assert listed.json()["total"] == 0


async def test_closing_an_openai_stream(served: Served) -> None:
    backend, generator = stalling(served)
    client = openai.AsyncOpenAI(
        base_url=f"{served.url}/v1", api_key=served.keys["viewer"], max_retries=0
    )
    stream = await client.chat.completions.create(
        model="cairn:hr", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    # The role comes at once; the text only once checked, which a stalled model never is.
    async for _chunk in stream:
        break
    assert await asyncio.to_thread(backend.started.wait, 10), "the generation never started"
    await stream.close()
    await stops(backend, generator)


async def test_hanging_up_on_a_whole_answer(served: Served) -> None:
    backend, generator = stalling(served)
    async with httpx.AsyncClient(base_url=served.url, timeout=2.0) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/api/v1/tenants/hr/chat",
                json={"question": QUESTION},
                headers=served.users["viewer"],
            )
    assert backend.started.is_set()
    await stops(backend, generator)
    # The cut-off answer was not stored as history.
    listed = await served.client.get(
        "/api/v1/tenants/hr/chat/sessions", headers=served.users["viewer"]
    )
    assert listed.json()["total"] == 0
