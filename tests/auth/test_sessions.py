"""Issue 21, items 1 and 2: no identity is ever reused, and signing out ends the session on the
server. Each runs on SQLite and PostgreSQL (the `backend` fixture)."""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.models import AuditEntry, AuthSession
from tests.conftest import Api, assert_error
from tests.helpers import key_of
from tests.web.helpers import csrf_of, form_token, sign_in


async def _me(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.get("/api/v1/users/me", headers=headers)


class TestNoIdentityReused:
    async def test_an_erased_newest_accounts_token_never_signs_in_the_next(
        self, api: Api, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        await api.tenant("hr")
        admin = await api.admin()
        erased = await api.user("eve", hr="viewer")
        eve_id = (await _me(client, erased)).json()["id"]
        assert (await client.get("/api/v1/tenants/hr/documents", headers=erased)).is_success

        # Erase the newest account, then create another: on SQLite without AUTOINCREMENT the
        # newcomer got the erased row's id, and the old token (sub = that id) answered as it.
        response = await client.post(
            "/api/v1/privacy/erase", json={"username": "eve"}, headers=admin
        )
        assert response.status_code == 200, response.text
        newcomer = await api.user("nina", hr="admin")
        nina_id = (await _me(client, newcomer)).json()["id"]

        assert nina_id != eve_id
        assert key_of(nina_id) > key_of(eve_id)
        assert_error(await _me(client, erased), 401, "not_authenticated")
        assert_error(await client.get("/api/v1/tenants/hr/documents", headers=erased), 401)
        # The newcomer's export carries none of the erased person's audit entries.
        export = await client.get(
            "/api/v1/privacy/export", params={"username": "nina"}, headers=admin
        )
        assert export.status_code == 200, export.text
        async with app.state.database.sessionmaker() as session:
            eves = (
                await session.scalars(
                    select(AuditEntry.id).where(AuditEntry.actor_id == key_of(eve_id))
                )
            ).all()
        assert eves == []
        actions = [entry["action"] for entry in export.json()["audit_entries"]]
        assert "auth.login" in actions
        assert all(entry["actor"] in (None, "nina") for entry in export.json()["audit_entries"])

    async def test_a_purged_newest_documents_id_is_never_given_again(
        self, api: Api, client: httpx.AsyncClient
    ) -> None:
        await api.tenant("hr")
        admin = await api.user("ad", hr="admin")

        async def upload(name: str) -> str:
            response = await client.post(
                "/api/v1/tenants/hr/documents",
                files={"file": (name, f"Notes about {name}.".encode(), "text/plain")},
                headers=admin,
            )
            assert response.status_code == 202, response.text
            return str(response.json()["id"])

        first = await upload("first.txt")
        purge = await client.delete(
            f"/api/v1/tenants/hr/documents/{first}?purge=true", headers=admin
        )
        assert purge.status_code == 202, purge.text
        receipt_url = f"/api/v1/tenants/hr/deletion-receipts/{purge.json()['receipt_id']}"
        deadline = time.monotonic() + 60
        while (receipt := (await client.get(receipt_url, headers=admin)).json())[
            "status"
        ] != "done":
            assert time.monotonic() < deadline, receipt
            await asyncio.sleep(0.2)
        assert receipt["document_id"] == first

        second = await upload("second.txt")
        assert second != first
        assert key_of(second) > key_of(first)
        # The receipt still names a document that no longer exists.
        assert (
            await client.get(f"/api/v1/tenants/hr/documents/{first}", headers=admin)
        ).status_code == 404


class TestSignOut:
    async def test_signing_out_ends_that_token_only(
        self, api: Api, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        await api.user("ann")
        first = await api.headers("ann")
        second = await api.headers("ann")
        response = await client.post("/api/v1/auth/signout", headers=first)
        assert response.status_code == 204, response.text
        assert_error(await _me(client, first), 401, "not_authenticated")
        assert_error(await client.post("/api/v1/auth/signout", headers=first), 401)
        assert (await _me(client, second)).status_code == 200
        async with app.state.database.sessionmaker() as session:
            reasons = (await session.scalars(select(AuthSession.end_reason))).all()
        assert "signout" in reasons

    async def test_signout_needs_a_session(self, api: Api, client: httpx.AsyncClient) -> None:
        assert_error(await client.post("/api/v1/auth/signout"), 401)
        headers = await api.user("ben")
        key = (await client.post("/api/v1/api-keys", json={"name": "k"}, headers=headers)).json()
        as_key = {"Authorization": f"Bearer {key['key']}"}
        assert_error(
            await client.post("/api/v1/auth/signout", headers=as_key), 400, "not_a_session"
        )

    async def test_a_replayed_cookie_after_signing_out_gets_401(
        self, api: Api, app: FastAPI
    ) -> None:
        await api.tenant("hr")
        await api.user("vi", hr="viewer")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cairn.test") as web:
            assert (await sign_in(web, "vi", "vi-password")).status_code == 303
            csrf = await csrf_of(web)
            stolen = dict(web.cookies)
            page = await web.get("/keys")
            signed_out = await web.post("/signout", data={"csrf_token": form_token(page.text)})
            assert signed_out.status_code == 303
        # The thief replays the cookie and CSRF token copied before the sign-out.
        async with httpx.AsyncClient(
            transport=transport, base_url="http://cairn.test", cookies=stolen
        ) as thief:
            headers = {"X-CSRF-Token": csrf}
            assert_error(await thief.get("/api/v1/users/me"), 401)
            minted = await thief.post("/api/v1/api-keys", json={"name": "x"}, headers=headers)
            assert minted.status_code == 401, minted.text
            assert (await thief.get("/t/hr/search")).status_code == 303

    async def test_password_change_ends_every_other_session(
        self, api: Api, client: httpx.AsyncClient
    ) -> None:
        await api.user("cy")
        other = await api.headers("cy")
        mine = await api.headers("cy")
        changed = await client.post(
            "/api/v1/users/me/password",
            json={"current_password": "cy-password", "new_password": "a brand new passphrase 42"},
            headers=mine,
        )
        assert changed.status_code == 200, changed.text
        fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
        assert_error(await _me(client, other), 401)
        assert_error(await _me(client, mine), 401)
        assert (await _me(client, fresh)).status_code == 200
