from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from app.kit.security import create_access_token
from tests.conftest import ADMIN_PASSWORD, TEST_SECRET, Api, assert_error


async def test_login_issues_a_working_jwt(api: Api, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["username"] == "admin"
    assert me.json()["is_platform_admin"] is True


@pytest.mark.parametrize(("username", "password"), [("admin", "wrong"), ("ghost", "whatever")])
async def test_bad_credentials_are_401_and_audited(
    api: Api, client: httpx.AsyncClient, username: str, password: str
) -> None:
    response = await client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )
    assert_error(response, 401, "not_authenticated")
    # Both failures read the same: the response does not reveal whether the user exists.
    assert response.json()["error"]["message"] == "Incorrect username or password"


async def test_missing_form_fields_are_422(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/api/v1/auth/token", data={"username": "x"}), 422)


async def test_expired_jwt_is_401(api: Api, client: httpx.AsyncClient) -> None:
    token = create_access_token(
        "some-subject",
        "some-session",
        secret=TEST_SECRET,
        algorithm="HS256",
        ttl=timedelta(minutes=5),
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401, "not_authenticated")


async def test_tampered_jwt_is_401(api: Api, client: httpx.AsyncClient) -> None:
    await api.tenant("hr")
    headers = await api.user("mallory")
    token = headers["Authorization"].removeprefix("Bearer ")
    header, payload, signature = token.split(".")
    # Swap in a payload claiming to be user 1 (the platform admin), keep the old signature.
    forged_payload = jwt.utils.base64url_encode(
        b'{"sub":"1","iat":1,"exp":4102444800,"typ":"access"}'
    ).decode()
    for forged in (
        f"{header}.{forged_payload}.{signature}",
        f"{header}.{payload}.{signature[:-2]}AA",
        jwt.encode({"sub": "1", "iat": 1, "exp": 4102444800, "typ": "access"}, "guessed-key"),
        jwt.encode(
            {"sub": "1", "iat": 1, "exp": 4102444800, "typ": "access"}, None, algorithm="none"
        ),
    ):
        response = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {forged}"}
        )
        assert_error(response, 401, "not_authenticated")


async def test_api_key_works_until_revoked(api: Api, client: httpx.AsyncClient) -> None:
    headers = await api.user("bob")
    created = await client.post("/api/v1/api-keys", json={"name": "laptop"}, headers=headers)
    assert created.status_code == 201
    key = created.json()["key"]
    key_headers = {"Authorization": f"Bearer {key}"}
    me = await client.get("/api/v1/users/me", headers=key_headers)
    assert me.status_code == 200
    assert me.json()["username"] == "bob"
    listed = await client.get("/api/v1/api-keys", headers=headers)
    assert [k["name"] for k in listed.json()] == ["laptop"]
    assert "key" not in listed.json()[0]  # shown once, at creation only

    # Someone else cannot revoke (or even see) bob's key.
    other = await api.user("eve")
    assert_error(
        await client.delete(f"/api/v1/api-keys/{created.json()['id']}", headers=other), 404
    )

    revoked = await client.delete(f"/api/v1/api-keys/{created.json()['id']}", headers=headers)
    assert revoked.status_code == 204
    assert_error(await client.get("/api/v1/users/me", headers=key_headers), 401)
    assert_error(
        await client.get("/api/v1/users/me", headers={"Authorization": "Bearer cairn_made-up"}),
        401,
    )


async def test_api_keys_are_stored_hashed(api: Api, client: httpx.AsyncClient, app: object) -> None:
    from sqlalchemy import select

    from app.models import APIKey

    headers = await api.user("bob")
    key = (await client.post("/api/v1/api-keys", json={}, headers=headers)).json()["key"]
    database = app.state.database  # type: ignore[attr-defined]
    async with database.sessionmaker() as session:
        stored = (await session.scalars(select(APIKey))).all()
    assert len(stored) == 1
    assert key not in {stored[0].key_hash, stored[0].prefix}
    assert stored[0].key_hash != key
