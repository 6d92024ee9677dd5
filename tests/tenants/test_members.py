"""Adding members by username: what a tenant admin learns, and the audit trail it leaves."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import Api, assert_error
from tests.helpers import without_request_id


async def test_a_tenant_admin_learns_only_whether_an_active_user_exists(
    api: Api, client: httpx.AsyncClient, app: FastAPI
) -> None:
    await api.tenant("eng")
    dana = await api.user("dana", eng="admin")
    await api.user("gone")
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE users SET is_active = false WHERE username = 'gone'"))

    unknown = await client.put(
        "/api/v1/tenants/eng/members/nobody", json={"role": "viewer"}, headers=dana
    )
    inactive = await client.put(
        "/api/v1/tenants/eng/members/gone", json={"role": "viewer"}, headers=dana
    )
    assert_error(unknown, 404, "not_found")
    # A deactivated account is indistinguishable from a name nobody has.
    assert without_request_id(inactive.json()) == without_request_id(unknown.json())

    entries = (await client.get("/api/v1/tenants/eng/audit", headers=dana)).json()["items"]
    failures = [e for e in entries if e["action"] == "member.set" and e["outcome"] == "failure"]
    assert len(failures) == 2
    for entry in failures:
        assert entry["actor"] == "dana"
        assert entry["target_id"] is None
        assert without_request_id(entry["details"]) == {
            "reason": "no active user",
            "role": "viewer",
        }
        # The attempted names are not kept in the log.
        assert "nobody" not in str(entry)
        assert "gone" not in str(entry)


async def test_tenant_names_lose_bidi_controls(api: Api, client: httpx.AsyncClient) -> None:
    admin = await api.admin()
    created = await client.post(
        "/api/v1/tenants", json={"slug": "hr", "name": "\u202eHR\u2069 Team"}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "HR Team"
    refused = await client.post(
        "/api/v1/tenants", json={"slug": "ops", "name": "\u202e\u200f"}, headers=admin
    )
    assert_error(refused, 422)
