"""A second, empty target (data dir and database) to restore into, and a restored app."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from app.kit.settings import Settings
from tests.conftest import POSTGRES_URL, _pg_admin, make_settings


@asynccontextmanager
async def empty_target(backend: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Settings]:
    """Settings for an empty data dir and an empty database (dropped afterwards)."""
    data_dir = tmp_path / f"restored-{uuid.uuid4().hex[:6]}"
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{data_dir / 'cairn.db'}"
        yield make_settings(url, data_dir, **overrides)
        return
    name = f"cairn_r_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield make_settings(url, data_dir, **overrides)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def search(
    client: httpx.AsyncClient, headers: dict[str, str], slug: str, query: str, mode: str
) -> list[tuple[str, str, float]]:
    """(document, chunk, score) of each hit, in order."""
    response = await client.post(
        f"/api/v1/tenants/{slug}/search",
        json={"query": query, "top_k": 5, "mode": mode},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return [
        (hit["document_id"], hit["chunk_id"], round(float(hit["score"]), 4))
        for hit in response.json()["hits"]
    ]


async def until(predicate: Any, timeout: float = 60.0) -> None:
    """Wait until an async predicate holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.2)
