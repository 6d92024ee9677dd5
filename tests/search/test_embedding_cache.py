"""The query-embedding cache (issue 14 §3): a repeated query is not embedded again, in memory
or in Redis, and tenants never share entries."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from app.kit.settings import Settings
from app.main import create_app
from app.search.retriever import QueryVector, Retriever
from tests.conftest import REDIS_URL, TEST_SECRET, Api, make_settings, require_service
from tests.helpers import key_of


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Settings:
    overrides: dict[str, Any] = {"embedded_workers": False}
    if request.param == "redis":
        require_service("Redis", REDIS_URL, 6379)
        overrides.update(
            redis_url=REDIS_URL,
            jwt_secret=TEST_SECRET + uuid.uuid4().hex,
            cache={"key_prefix": f"cairn-test-{uuid.uuid4().hex}"},
        )
    return make_settings(database_url, tmp_path / "data", **overrides)


@pytest.fixture
def embedded(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the embedder was really asked to embed."""
    retriever: Retriever = app.state.retriever
    real = retriever._embed
    texts: list[str] = []

    def counting(text: str) -> QueryVector:
        texts.append(text)
        return real(text)

    monkeypatch.setattr(retriever, "_embed", counting)
    return texts


async def search(client: httpx.AsyncClient, headers: dict[str, str], slug: str, query: str) -> Any:
    response = await client.post(
        f"/api/v1/tenants/{slug}/search", json={"query": query, "mode": "vector"}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_repeated_query_is_embedded_once_per_tenant(
    client: httpx.AsyncClient, api: Api, app: FastAPI, embedded: list[str]
) -> None:
    hr = await api.tenant("hr")
    await api.tenant("eng")
    both = await api.user("both", hr="viewer", eng="viewer")
    query = "How many vacation days do we get?"
    await search(client, both, "hr", query)
    await search(client, both, "hr", "  How many vacation   days do we get? ")
    assert embedded == [query]
    # The same words in another tenant: nothing of hr's entry is used (or probed) there.
    await search(client, both, "eng", query)
    assert embedded == [query, query]
    await search(client, both, "hr", "Who issues parking permits?")
    assert len(embedded) == 3
    # A cached vector is the vector: the same as embedding the query anew.
    retriever: Retriever = app.state.retriever
    fresh = retriever._embed(query)
    cached = await retriever.embed_query(query, tenant_id=key_of(hr["id"]))
    assert cached.embedder == fresh.embedder
    assert np.array_equal(cached.vector, fresh.vector)


async def test_switched_off_every_query_is_embedded(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        database_url, tmp_path / "data", embedded_workers=False, cache={"query_embeddings": False}
    )
    application = create_app(settings)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://cairn.test"
        ) as client,
    ):
        retriever: Retriever = application.state.retriever
        assert retriever.query_cache is None
        api = Api(client)
        await api.tenant("hr")
        viewer = await api.user("vi", hr="viewer")
        calls: list[str] = []
        real = retriever._embed

        def counting(text: str) -> QueryVector:
            calls.append(text)
            return real(text)

        monkeypatch.setattr(retriever, "_embed", counting)
        for _ in range(2):
            await search(client, viewer, "hr", "vacation")
        assert calls == ["vacation", "vacation"]
