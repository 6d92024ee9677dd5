"""/metrics behind an optional bearer token; the API docs can be switched off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.conftest import assert_error, make_settings

METRICS_TOKEN = "metrics-token-" + "m" * 32


@pytest.fixture
async def make_client(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    async def make(**overrides: Any) -> httpx.AsyncClient:
        app = create_app(make_settings(database_url, tmp_path / "data", **overrides))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_metrics_are_public_without_a_token(make_client: Any) -> None:
    client = await make_client()
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "cairn_http_requests_total" in response.text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_metrics_token_is_required_when_set(make_client: Any) -> None:
    client = await make_client(metrics_token=METRICS_TOKEN)
    assert_error(await client.get("/metrics"), 401, "not_authenticated")
    for wrong in (f"Bearer {METRICS_TOKEN}x", f"Basic {METRICS_TOKEN}", METRICS_TOKEN, "Bearer"):
        assert_error(await client.get("/metrics", headers={"Authorization": wrong}), 401)
    ok = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200
    assert "cairn_http_requests_total" in ok.text


def test_metrics_token_is_not_in_the_settings_repr(tmp_path: Path) -> None:
    settings = make_settings("sqlite://", tmp_path, metrics_token=METRICS_TOKEN)
    assert METRICS_TOKEN not in repr(settings)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_api_docs_can_be_turned_off(make_client: Any) -> None:
    on = await make_client()
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await on.get(path)).status_code == 200, path
    off = await make_client(api_docs=False)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert_error(await off.get(path), 404)
