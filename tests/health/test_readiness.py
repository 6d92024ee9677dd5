"""GET /readyz: every check in the body; 503 with the failing checks' reasons."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.generation.provider import GeneratorProvider
from app.kit.db import Database
from app.kit.settings import Settings
from app.main import create_app
from tests.chat.doubles import EchoGenerator, limited
from tests.conftest import REDIS_URL, assert_error, make_settings, require_service

Serve = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]
# Nothing listens on port 1: connections are refused at once.
CLOSED_PORT_POSTGRES = "postgresql+asyncpg://cairn@127.0.0.1:1/cairn"
CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def serve(database_url: str, tmp_path: Path) -> Serve:
    @asynccontextmanager
    async def run(
        provider: GeneratorProvider | None = None, **overrides: Any
    ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        settings = make_settings(database_url, tmp_path / "data", **overrides)
        app = create_app(settings)
        if provider is not None:
            app.state.generator = provider
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield app, client

    return run


def reasons(response: httpx.Response) -> list[str]:
    assert_error(response, 503, "not_ready")
    error = response.json()["error"]
    for reason in error["details"]["reasons"]:
        assert reason in error["message"]
    return list(error["details"]["reasons"])


async def test_ready_lists_every_check(serve: Serve) -> None:
    async with serve() as (_, client):
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {
            "database": "ok",
            "migrations": "ok",
            "broker": "not configured",
            "redis": "not configured",
            "generator": "not preloaded",
        },
        # Not preloaded and nobody asked yet: the preparation has not started.
        "generator": {
            "state": "idle",
            "preparing": False,
            "percent": 0,
            "stage_percent": None,
            "seconds": None,
            "eta_seconds": None,
            "error": None,
        },
    }


async def test_a_database_that_does_not_answer_is_not_ready(serve: Serve) -> None:
    async with serve() as (app, client):
        # The app's database goes away: point it at a port where nothing listens.
        working = app.state.database
        app.state.database = Database(CLOSED_PORT_POSTGRES)
        try:
            response = await client.get("/readyz")
        finally:
            await app.state.database.dispose()
            app.state.database = working
        assert (await client.get("/readyz")).status_code == 200
    found = reasons(response)
    assert any(r.startswith("database: unreachable (") for r in found), found
    assert "migrations: not checked (no database)" in found
    # Nothing of the URL (host, user) is shown.
    assert "127.0.0.1" not in response.text
    assert "cairn@" not in response.text


async def test_a_database_behind_the_migrations_is_not_ready(serve: Serve) -> None:
    async with serve() as (app, client):
        async with app.state.database.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
        found = reasons(await client.get("/readyz"))
    assert len(found) == 1
    assert found[0].startswith("migrations: at older, head is ")


async def test_a_broker_that_does_not_answer_is_not_ready(serve: Serve) -> None:
    async with serve(broker_url=CLOSED_PORT_REDIS) as (_, client):
        response = await client.get("/readyz")
    assert reasons(response) == ["broker: unreachable (OperationalError)"]
    assert response.json()["error"]["details"]["checks"]["database"] == "ok"


@pytest.mark.redis
async def test_a_broker_that_answers_is_ready(serve: Serve) -> None:
    require_service("Redis", REDIS_URL, 6379)
    async with serve(broker_url=REDIS_URL) as (_, client):
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["broker"] == "ok"


async def test_a_redis_that_does_not_answer_is_not_ready(serve: Serve) -> None:
    """Redis (quota and sign-in counters, caches) stopped: not ready, and why; the database
    and broker checks are unaffected."""
    async with serve(redis_url=CLOSED_PORT_REDIS) as (_, client):
        response = await client.get("/readyz")
    assert reasons(response) == ["redis: unreachable (ConnectionError)"]
    assert response.json()["error"]["details"]["checks"]["database"] == "ok"
    assert "127.0.0.1" not in response.text


@pytest.mark.redis
async def test_a_redis_that_answers_is_ready(serve: Serve) -> None:
    require_service("Redis", REDIS_URL, 6379)
    async with serve(redis_url=REDIS_URL) as (_, client):
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["redis"] == "ok"


async def test_a_preloaded_generator_must_be_loaded(
    serve: Serve, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preload = {"generator": {"preload": True}}
    settings = make_settings(database_url, tmp_path / "data", **preload)
    loaded = GeneratorProvider(settings, limited(EchoGenerator()))
    async with serve(loaded, **preload) as (_, client):
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["generator"] == "ok"

    def broken(_: Settings) -> Any:
        raise RuntimeError("no model here")

    monkeypatch.setattr("app.generation.provider.load_generator", broken)
    failing = GeneratorProvider(settings)
    async with serve(failing, **preload) as (_, client):
        await failing.preload()  # the start-up load, awaited so the test does not race it
        found = reasons(await client.get("/readyz"))
    assert found == ["generator: failed to load (RuntimeError)"]
