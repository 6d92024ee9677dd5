"""API key names are display text: no bidi or control characters."""

from __future__ import annotations

import httpx

from tests.conftest import Api, assert_error


async def test_api_key_names_lose_bidi_controls(api: Api, client: httpx.AsyncClient) -> None:
    admin = await api.admin()
    created = await client.post(
        "/api/v1/api-keys", json={"name": "ci\u202e-runner\x1b"}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "ci-runner"
    assert_error(await client.post("/api/v1/api-keys", json={"name": "\u2067"}, headers=admin), 422)
