"""Issue 11, finding 2: an API key cannot manage API keys. Key management takes an interactive
sign-in (a JWT), so a short-lived or leaked key can neither mint a key that outlives it nor
list or revoke its owner's other keys."""

from __future__ import annotations

import httpx

from tests.conftest import Api, assert_error


async def _key(
    client: httpx.AsyncClient, headers: dict[str, str], **body: object
) -> dict[str, str]:
    response = await client.post("/api/v1/api-keys", json=body or None, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_key_cannot_mint_list_or_revoke_keys(client: httpx.AsyncClient, api: Api) -> None:
    owner = await api.user("owner")
    short = await _key(client, owner, name="short", expires_in_days=1)
    other = await _key(client, owner, name="ci")
    as_key = {"Authorization": f"Bearer {short['key']}"}
    # The key works for ordinary calls...
    assert (await client.get("/api/v1/users/me", headers=as_key)).status_code == 200
    # ...but not for managing keys: no child without expiry, no listing, no revoking.
    minted = await client.post("/api/v1/api-keys", json={"name": "forever"}, headers=as_key)
    assert_error(minted, 403, "interactive_sign_in_required")
    assert_error(await client.get("/api/v1/api-keys", headers=as_key), 403)
    revoked = await client.delete(f"/api/v1/api-keys/{other['id']}", headers=as_key)
    assert_error(revoked, 403)
    listed = (await client.get("/api/v1/api-keys", headers=owner)).json()
    assert {k["name"] for k in listed} == {"short", "ci"}
    assert all(k["revoked_at"] is None for k in listed)


async def test_revoking_a_key_ends_it_at_once(client: httpx.AsyncClient, api: Api) -> None:
    owner = await api.user("owner")
    key = await _key(client, owner, name="ci")
    as_key = {"Authorization": f"Bearer {key['key']}"}
    assert (await client.get("/api/v1/users/me", headers=as_key)).status_code == 200
    response = await client.delete(f"/api/v1/api-keys/{key['id']}", headers=owner)
    assert response.status_code == 204
    assert_error(await client.get("/api/v1/users/me", headers=as_key), 401)


async def test_another_users_key_is_not_found(client: httpx.AsyncClient, api: Api) -> None:
    owner = await api.user("owner")
    key = await _key(client, owner, name="ci")
    stranger = await api.user("stranger")
    assert_error(await client.delete(f"/api/v1/api-keys/{key['id']}", headers=stranger), 404)
    # Raw integers are not ids.
    assert_error(await client.delete("/api/v1/api-keys/1", headers=owner), 422)
