"""`cairn encryption enable` on data stored in plaintext: interrupted halfway, run again, done
(SQLite and PostgreSQL); `status` counts what is sealed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.crypto import service as crypto_service
from app.jobs.runtime import Runtime
from app.kit.settings import Settings
from tests.conftest import Api
from tests.crypto.helpers import (
    CANARY,
    Interrupted,
    encrypted_settings,
    interrupt_sealing_at,
    scan,
)
from tests.crypto.test_at_rest import _search, _upload, _vectors_sealed


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Written in plaintext (encryption off), with the KEK already configured for reading.
    return encrypted_settings(database_url, tmp_path, enabled=False)


async def test_enable_is_resumable_and_search_keeps_working(
    api: Api,
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await api.tenant("hr")
    headers = await api.user("ed", hr="editor")
    for n in range(3):
        await _upload(client, headers, "hr", n)
    assert scan(settings.data_dir, CANARY.encode()), "written in plaintext while disabled"

    on = settings.model_copy(
        update={"encryption": settings.encryption.model_copy(update={"enabled": True})}
    )
    runtime = Runtime(on)
    try:
        assert not await _vectors_sealed(app)
        before = (await crypto_service.status(runtime))[0]
        assert before.files.total == 3
        assert before.files.sealed == 0
        assert before.chunks.sealed == 0
        assert before.key == "none"

        # Killed while sealing the second stored file.
        undo = interrupt_sealing_at(monkeypatch, 2)
        with pytest.raises(Interrupted):
            await crypto_service.enable(runtime)
        halfway = (await crypto_service.status(runtime))[0]
        assert halfway.chunks.sealed == halfway.chunks.total > 0
        assert halfway.files.sealed == 1
        assert halfway.shards.sealed == 0
        assert not halfway.complete
        # Mixed plaintext and sealed data is served meanwhile.
        texts = await _search(client, headers, "hr")
        assert any(CANARY in t for t in texts)

        undo()
        done = await crypto_service.enable(runtime)
        assert done.chunks == 0  # already sealed: skipped
        assert done.files == 2
        assert done.shards == halfway.shards.total > 0
        again = await crypto_service.enable(runtime)
        assert (again.chunks, again.files, again.shards) == (0, 0, 0)
        assert await _vectors_sealed(app)
        final = (await crypto_service.status(runtime))[0]
        assert final.complete
        assert final.key != "none"
    finally:
        await runtime.close()

    await app.state.database.checkpoint_wal()
    assert scan(settings.data_dir, CANARY.encode()) == []
    # The serving process (encryption off, KEK set) reads the sealed data: cached shards
    # dropped, it loads the sealed files.
    app.state.retriever.cache.forget(await _tenant(app))
    texts = await _search(client, headers, "hr")
    assert any(CANARY in t for t in texts)


async def _tenant(app: FastAPI) -> int:
    async with app.state.database.read_sessionmaker() as session:
        return int(await session.scalar(text("SELECT id FROM tenants WHERE slug = 'hr'")) or 0)
