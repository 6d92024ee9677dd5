"""Security headers on every response; no-store on every API response."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.kit.headers import SecurityHeaders
from tests.conftest import ADMIN_PASSWORD, Api, assert_error


def _has_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def _no_store(response: httpx.Response) -> None:
    assert response.headers.get_list("cache-control") == ["no-store"]


async def test_token_error_and_normal_responses(api: Api, client: httpx.AsyncClient) -> None:
    token = await client.post(
        "/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert token.status_code == 200
    _has_security_headers(token)
    _no_store(token)

    refused = await client.get("/api/v1/tenants")
    assert_error(refused, 401)
    _has_security_headers(refused)
    _no_store(refused)

    listed = await client.get("/api/v1/tenants", headers=await api.admin())
    assert listed.status_code == 200
    _has_security_headers(listed)
    _no_store(listed)

    unknown = await client.get("/api/v1/nothing-here")
    assert_error(unknown, 404)
    _no_store(unknown)

    # Not private: the health check gets the security headers but may be cached.
    health = await client.get("/healthz")
    assert health.status_code == 200
    _has_security_headers(health)
    assert "cache-control" not in health.headers


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [("/api/v1/x", ["no-store"]), ("/v1/models", ["no-store"]), ("/apix", ["max-age=60"])],
)
async def test_a_weaker_cache_directive_is_replaced_on_api_paths(
    path: str, cache_control: list[str]
) -> None:
    async def endpoint(_: object) -> PlainTextResponse:
        return PlainTextResponse("x", headers={"Cache-Control": "max-age=60"})

    app = SecurityHeaders(Starlette(routes=[Route(path, endpoint)]))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.get(path)
    _has_security_headers(response)
    assert response.headers.get_list("cache-control") == cache_control
