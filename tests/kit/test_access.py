"""Every endpoint: anonymous → 401, wrong role → 403, other tenant → 404 (like a missing one)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Api, assert_error
from tests.helpers import without_request_id

# (method, path template, json body, a role in the tenant that may NOT do it, or None)
TENANT_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("GET", "/api/v1/tenants/{t}", None, None),
    ("GET", "/api/v1/tenants/{t}/members", None, "viewer"),
    ("PUT", "/api/v1/tenants/{t}/members/carol", {"role": "viewer"}, "editor"),
    ("DELETE", "/api/v1/tenants/{t}/members/carol", None, "viewer"),
    ("GET", "/api/v1/tenants/{t}/audit", None, "editor"),
    ("GET", "/api/v1/tenants/{t}/audit/verify", None, "viewer"),
    ("GET", "/api/v1/tenants/{t}/audit/checkpoints", None, "editor"),
    ("GET", "/api/v1/tenants/{t}/audit/export?format=csv", None, "editor"),
    ("PATCH", "/api/v1/tenants/{t}", {"retention_days": 5}, "editor"),
    # Deleting a tenant is the platform admin's alone (its own admin: tests/crypto).
    ("DELETE", "/api/v1/tenants/{t}?shred=true", None, "editor"),
    ("GET", "/api/v1/tenants/{t}/deletion-receipts", None, "viewer"),
    ("GET", "/api/v1/tenants/{t}/deletion-receipts/rcp_" + "0" * 32, None, "editor"),
]

GLOBAL_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, bool]] = [
    # (method, path, body, needs platform admin)
    ("POST", "/api/v1/tenants", {"slug": "new", "name": "New"}, True),
    ("POST", "/api/v1/users", {"username": "newbie", "password": "long-enough"}, True),
    ("GET", "/api/v1/users", None, True),
    ("GET", "/api/v1/tenants", None, False),
    ("GET", "/api/v1/users/me", None, False),
    (
        "POST",
        "/api/v1/users/me/password",
        {"current_password": "x", "new_password": "a new passphrase"},
        False,
    ),
    ("POST", "/api/v1/users/carol/password", {"new_password": "a new passphrase"}, True),
    ("PATCH", "/api/v1/users/carol", {"is_active": False}, True),
    ("POST", "/api/v1/api-keys", {"name": "k"}, False),
    ("GET", "/api/v1/api-keys", None, False),
    ("DELETE", "/api/v1/api-keys/key_" + "0" * 32, None, False),
    ("GET", "/api/v1/audit/verify", None, False),
    # Scoped like /audit/verify: each caller sees the checkpoints of the chains it may verify.
    ("GET", "/api/v1/audit/checkpoints", None, False),
    ("GET", "/api/v1/audit/public-key", None, False),
    # A person's data: export (themself, or a platform admin) and erase (platform admin).
    ("GET", "/api/v1/privacy/export?username=carol", None, True),
    ("POST", "/api/v1/privacy/erase", {"username": "carol"}, True),
]


@pytest.fixture
async def world(api: Api) -> dict[str, dict[str, str]]:
    await api.tenant("hr")
    await api.tenant("eng")
    await api.user("carol", hr="viewer", eng="viewer")
    return {
        "hr_viewer": await api.user("hrviewer", hr="viewer"),
        "hr_editor": await api.user("hreditor", hr="editor"),
        "eng_admin": await api.user("engadmin", eng="admin"),
    }


async def _call(
    client: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str] | None
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers or {})


@pytest.mark.parametrize(("method", "path", "body", "_role"), TENANT_ENDPOINTS)
async def test_tenant_endpoints_reject_anonymous(
    client: httpx.AsyncClient, world: Any, method: str, path: str, body: Any, _role: str | None
) -> None:
    response = await _call(client, method, path.format(t="hr"), body, None)
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body", "role"), TENANT_ENDPOINTS)
async def test_tenant_endpoints_reject_wrong_role(
    client: httpx.AsyncClient,
    world: dict[str, dict[str, str]],
    method: str,
    path: str,
    body: Any,
    role: str | None,
) -> None:
    if role is None:
        pytest.skip("every role in the tenant may call this endpoint")
    response = await _call(client, method, path.format(t="hr"), body, world[f"hr_{role}"])
    assert_error(response, 403, "forbidden")


@pytest.mark.parametrize(("method", "path", "body", "_role"), TENANT_ENDPOINTS)
async def test_tenant_endpoints_hide_other_tenants(
    client: httpx.AsyncClient,
    world: dict[str, dict[str, str]],
    method: str,
    path: str,
    body: Any,
    _role: str | None,
) -> None:
    # eng's admin has no role in hr: hr must look exactly like a tenant that does not exist.
    other = await _call(client, method, path.format(t="hr"), body, world["eng_admin"])
    missing = await _call(client, method, path.format(t="no-such"), body, world["eng_admin"])
    assert_error(other, 404, "not_found")
    assert without_request_id(other.json()) == without_request_id(missing.json())


@pytest.mark.parametrize(("method", "path", "body", "needs_admin"), GLOBAL_ENDPOINTS)
async def test_global_endpoints(
    client: httpx.AsyncClient,
    world: dict[str, dict[str, str]],
    method: str,
    path: str,
    body: Any,
    needs_admin: bool,
) -> None:
    assert_error(await _call(client, method, path, body, None), 401, "not_authenticated")
    if needs_admin:
        response = await _call(client, method, path, body, world["eng_admin"])
        assert_error(response, 403, "forbidden")


async def test_unknown_route_and_method_use_error_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(await client.patch("/healthz"), 405)


async def test_malformed_json_and_wrong_types_are_422(api: Api, client: httpx.AsyncClient) -> None:
    headers = {**await api.admin(), "content-type": "application/json"}
    response = await client.post("/api/v1/tenants", content=b"{not json", headers=headers)
    assert_error(response, 422, "validation_error")
    response = await client.post("/api/v1/tenants", json={"slug": 5, "name": []}, headers=headers)
    assert_error(response, 422, "validation_error")
    assert {tuple(d["loc"]) for d in response.json()["error"]["details"]} >= {
        ("body", "slug"),
        ("body", "name"),
    }
    response = await client.post(
        "/api/v1/users", json={"username": "x y", "password": "s3cret-value!"}, headers=headers
    )
    assert_error(response, 422, "validation_error")
    # Validation errors never echo the submitted values (a password could be among them).
    assert "s3cret-value!" not in response.text
    response = await client.get("/api/v1/tenants?limit=0", headers=headers)
    assert_error(response, 422, "validation_error")
