"""The shard cache's version check never waits for the connection pool that requests hold
their sessions in. Searches queued on a tenant's refresh lock each hold a connection; when
the refresh itself needed one from that pool, a busy API process stalled every search for the
pool's timeout and then answered 500 (`cairn bench serve`, concurrency 32, one process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.kit.db import Database, create_engine
from app.search.shard_cache import ShardCache


async def test_a_refresh_does_not_need_a_connection_from_the_request_pool(
    database_url: str, tmp_path: Path
) -> None:
    database = Database(database_url)
    # One connection in the requests' read pool, and a short wait for it.
    pool: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 1}
    await database.read_engine.dispose()
    database.read_engine = create_engine(database_url, immediate=False, **pool)
    database.read_sessionmaker = async_sessionmaker(database.read_engine)
    cache = ShardCache(database, tmp_path / "index", max_bytes=1 << 20, poll_seconds=0)
    try:
        async with database.read_sessionmaker() as request_session:
            await request_session.execute(text("SELECT 1"))  # the "request" holds it
            # The control: that pool has nothing left to give.
            with pytest.raises(PoolTimeout):
                async with database.read_sessionmaker() as other:
                    await other.execute(text("SELECT 1"))
            index = await asyncio.wait_for(cache.get(1), timeout=20)
        assert cache.cached_tenants() == [1]
        assert index is not None
    finally:
        await database.dispose()
