"""Roles per tenant: the same person holds different rights in different tenants."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from app.kit.authz import TENANT_ROLES, Enforcer, domain_of
from app.main import create_app
from tests.conftest import Api, assert_error
from tests.helpers import key_of


async def test_viewer_in_hr_admin_in_eng(api: Api, client: httpx.AsyncClient) -> None:
    hr = await api.tenant("hr")
    eng = await api.tenant("eng")
    await api.user("target")
    dana = await api.user("dana", hr="viewer", eng="admin")

    tenants = await client.get("/api/v1/tenants", headers=dana)
    assert {(t["slug"], t["role"]) for t in tenants.json()["items"]} == {
        ("hr", "viewer"),
        ("eng", "admin"),
    }
    # admin in eng: manages members and reads the audit log there...
    put = await client.put(
        "/api/v1/tenants/eng/members/target", json={"role": "editor"}, headers=dana
    )
    assert put.status_code == 200
    assert (await client.get("/api/v1/tenants/eng/audit", headers=dana)).status_code == 200
    assert (await client.get("/api/v1/tenants/eng/members", headers=dana)).status_code == 200
    # ...but is only a viewer in hr.
    put = await client.put(
        "/api/v1/tenants/hr/members/target", json={"role": "editor"}, headers=dana
    )
    assert_error(put, 403)
    assert_error(await client.get("/api/v1/tenants/hr/audit", headers=dana), 403)
    assert_error(await client.get("/api/v1/tenants/hr/members", headers=dana), 403)
    assert (await client.get("/api/v1/tenants/hr", headers=dana)).json()["role"] == "viewer"

    enforcer: Enforcer = client._transport.app.state.enforcer  # type: ignore[attr-defined]
    me = (await client.get("/api/v1/users/me", headers=dana)).json()
    me_key = key_of(me["id"])
    assert enforcer.allowed(me_key, domain_of(key_of(hr["id"])), "search", "query")
    assert not enforcer.allowed(me_key, domain_of(key_of(hr["id"])), "documents", "write")
    assert enforcer.allowed(me_key, domain_of(key_of(eng["id"])), "documents", "purge")


async def test_role_matrix_matches_spec(api: Api, client: httpx.AsyncClient) -> None:
    tenant = await api.tenant("ops")
    for role in TENANT_ROLES:
        await api.user(f"u-{role.replace('_', '-')}", ops=role)
    enforcer: Enforcer = client._transport.app.state.enforcer  # type: ignore[attr-defined]
    users = (await client.get("/api/v1/users", headers=await api.admin())).json()["items"]
    ids = {u["username"]: key_of(u["id"]) for u in users}
    domain = domain_of(key_of(tenant["id"]))

    def can(role: str, obj: str, act: str) -> bool:
        return enforcer.allowed(ids[f"u-{role.replace('_', '-')}"], domain, obj, act)

    expected = {
        # role: (upload, purge, members, search, chat, audit, read documents)
        "admin": (True, True, True, True, True, True, True),
        "editor": (True, False, False, True, True, False, True),
        "viewer": (False, False, False, True, True, False, True),
        "restricted_viewer": (False, False, False, True, True, False, True),
        "guest": (False, False, False, True, False, False, False),
        "auditor": (False, False, False, False, False, True, False),
    }
    for role, flags in expected.items():
        actual = (
            can(role, "documents", "write"),
            can(role, "documents", "purge"),
            can(role, "members", "write"),
            can(role, "search", "query"),
            can(role, "chat", "ask"),
            can(role, "audit", "read"),
            can(role, "documents", "read"),
        )
        assert actual == flags, role
    sensitivity = {
        role: enforcer.sensitivity_levels(ids[f"u-{role.replace('_', '-')}"], key_of(tenant["id"]))
        for role in TENANT_ROLES
    }
    assert sensitivity == {
        "admin": ("public", "internal", "confidential"),
        "editor": ("public", "internal", "confidential"),
        "viewer": ("public", "internal", "confidential"),
        "restricted_viewer": ("public", "internal"),
        "guest": ("public",),
        "auditor": (),
    }


async def test_membership_change_applies_on_next_request_in_other_processes(
    api: Api, client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Two app instances over one database stand in for two worker processes: each has its own
    enforcer and policy cache, exactly as separate processes would."""
    await api.tenant("hr")
    frank = await api.user("frank", hr="viewer")
    other = create_app(app.state.settings)
    async with (
        other.router.lifespan_context(other),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=other), base_url="http://other"
        ) as second,
    ):
        assert_error(await second.get("/api/v1/tenants/hr/members", headers=frank), 403)
        await api.member("hr", "frank", "admin")  # through the first process
        assert (await second.get("/api/v1/tenants/hr/members", headers=frank)).status_code == 200
        removed = await client.delete("/api/v1/tenants/hr/members/frank", headers=await api.admin())
        assert removed.status_code == 204
        assert_error(await second.get("/api/v1/tenants/hr/members", headers=frank), 404)


async def test_last_admin_cannot_be_removed_by_a_tenant_admin(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.tenant("hr")
    ann = await api.user("ann", hr="admin")
    assert_error(await client.delete("/api/v1/tenants/hr/members/ann", headers=ann), 409)
    demote = await client.put(
        "/api/v1/tenants/hr/members/ann", json={"role": "viewer"}, headers=ann
    )
    assert_error(demote, 409)
    # The platform admin may (e.g. to hand the tenant over).
    ok = await client.delete("/api/v1/tenants/hr/members/ann", headers=await api.admin())
    assert ok.status_code == 204


async def test_invalid_role_and_unknown_user(api: Api, client: httpx.AsyncClient) -> None:
    await api.tenant("hr")
    await api.user("gil")
    admin = await api.admin()
    bad = await client.put("/api/v1/tenants/hr/members/gil", json={"role": "owner"}, headers=admin)
    assert_error(bad, 422)
    missing = await client.put(
        "/api/v1/tenants/hr/members/nobody", json={"role": "viewer"}, headers=admin
    )
    assert_error(missing, 404)


async def test_duplicate_tenant_and_user_are_409(api: Api, client: httpx.AsyncClient) -> None:
    await api.tenant("hr")
    admin = await api.admin()
    dup = await client.post("/api/v1/tenants", json={"slug": "hr", "name": "again"}, headers=admin)
    assert_error(dup, 409)
    await api.user("hal")
    dup = await client.post(
        "/api/v1/users", json={"username": "HAL", "password": "long-enough"}, headers=admin
    )
    assert_error(dup, 409)
