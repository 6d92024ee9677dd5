"""Questions while the answer model is prepared: a quick 503 generator_preparing with the
progress and a Retry-After, on every chat route, streamed or not; answers that need no model
are still given; once the model is ready, chat works."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from app.generation.provider import GeneratorProvider
from tests.chat.conftest import World
from tests.conftest import assert_error
from tests.generation.preparing import BlockedPreparation

QUESTION = "How many days of paid vacation does every employee receive per year?"


def assert_preparing(response: httpx.Response) -> None:
    assert_error(response, 503, "generator_preparing")
    retry = response.headers["retry-after"]
    assert retry.isdigit()
    assert int(retry) >= 1
    error = response.json()["error"]
    assert "converting" in error["message"]
    assert "% done" in error["message"]
    preparation = error["details"]["preparation"]
    assert preparation["state"] == "converting"
    assert preparation["stage_percent"] == 60


async def test_chat_during_the_preparation_is_a_quick_503_then_answers(
    app: FastAPI, client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer = world.users["viewer"]
    with BlockedPreparation(monkeypatch) as blocked:
        # The API's provider, waiting a moment instead of API_WAIT_SECONDS: the test stays fast.
        provider = GeneratorProvider(app.state.settings, wait_seconds=0.01)
        app.state.generator = provider

        first = await client.post(
            "/api/v1/tenants/hr/chat", json={"question": QUESTION}, headers=viewer
        )
        # The first question started the preparation and did not wait for it.
        assert_error(first, 503, "generator_preparing")
        await asyncio.to_thread(blocked.wait_reached)
        assert_preparing(
            await client.post(
                "/api/v1/tenants/hr/chat", json={"question": QUESTION}, headers=viewer
            )
        )
        assert_preparing(
            await client.post(
                "/api/v1/tenants/hr/chat",
                json={"question": QUESTION, "stream": True},
                headers=viewer,
            )
        )
        for stream in (False, True):
            assert_preparing(
                await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "cairn:hr",
                        "messages": [{"role": "user", "content": QUESTION}],
                        "stream": stream,
                    },
                    headers=viewer,
                )
            )
        # Nothing relevant needs no model: answered meanwhile.
        unrelated = await client.post(
            "/api/v1/tenants/hr/chat",
            json={"question": "Who won the football world cup in 1998?"},
            headers=viewer,
        )
        assert unrelated.status_code == 200, unrelated.text

        blocked.release()
        await provider.start()
        answered = await client.post(
            "/api/v1/tenants/hr/chat", json={"question": QUESTION}, headers=viewer
        )
        assert answered.status_code == 200, answered.text
        assert blocked.echo.calls >= 1
    # Every question shared the one preparation.
    assert blocked.calls == 1
