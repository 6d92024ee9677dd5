"""The API's generator: preloaded at start when configured, a clear 503 when it cannot load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from fastapi import FastAPI

from app.generation.provider import GeneratorProvider
from app.main import create_app
from tests.chat.conftest import World
from tests.conftest import assert_error, make_settings

QUESTION = "How many days of paid vacation does every employee receive per year?"


async def test_preload_loads_the_model_while_starting(
    database_url: str, tmp_path: Path, tiny_deepseek_v3: Path
) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        embedded_workers=False,
        generator={"model_path": str(tiny_deepseek_v3), "preload": True},
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        provider: GeneratorProvider = app.state.generator
        for _ in range(600):
            if provider.loaded:
                break
            await asyncio.sleep(0.1)
        assert provider.loaded


async def test_a_model_that_cannot_load_is_a_clear_503(
    app: FastAPI, client: httpx.AsyncClient, world: World, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    settings = app.state.settings.model_copy(
        update={
            "generator": app.state.settings.generator.model_copy(
                update={"model_path": str(missing)}
            )
        }
    )
    app.state.generator = GeneratorProvider(settings)
    response = await client.post(
        "/api/v1/tenants/hr/chat", json={"question": QUESTION}, headers=world.users["viewer"]
    )
    assert_error(response, 503, "generator_unavailable")
    assert str(missing) in response.json()["error"]["message"]
    # Nothing relevant needs no model: still answered.
    unrelated = await client.post(
        "/api/v1/tenants/hr/chat",
        json={"question": "Who won the football world cup in 1998?"},
        headers=world.users["viewer"],
    )
    assert unrelated.status_code == 200
