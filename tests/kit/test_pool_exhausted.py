"""A request that waited the pool's whole timeout for a database connection is told to retry
(503 + Retry-After, SPEC's error shape), not given a 500: the process is overloaded, not
broken. Seen with `cairn bench serve` at concurrency 32 on SQLite on 2 cores."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.kit.db import Database
from app.kit.errors import install_error_handlers
from tests.conftest import assert_error


async def test_an_exhausted_connection_pool_is_a_503_with_retry_after() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/busy")
    async def busy() -> None:
        raise PoolTimeout("QueuePool limit of size 5 overflow 10 reached")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/busy")
    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1"
    assert "QueuePool" not in response.text


async def test_reads_and_writes_come_from_separate_pools(database_url: str) -> None:
    """A request holds its read session (authentication) to its end and takes a write session
    later (an audit entry): from one pool, more concurrent requests than connections would
    each hold one and wait for a second (PostgreSQL before the fix; SQLite always had two)."""
    database = Database(database_url)
    try:
        assert database.read_engine is not database.engine
        assert database.read_engine.pool is not database.engine.pool
    finally:
        await database.dispose()
