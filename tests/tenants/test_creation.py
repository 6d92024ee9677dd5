"""Creating a tenant: the creator becomes its admin unless it says {"join": false}, audited; and
the tenant list: every tenant's metadata for a platform admin, no content, counts only for
those who may count."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from app.models import AuditEntry, Membership, Tenant
from tests.conftest import Api, assert_error
from tests.helpers import key_of, without_request_id

LISTED = {
    "id",
    "slug",
    "name",
    "created_at",
    "retention_days",
    "role",
    "members_count",
    "documents_count",
}


async def _upload(
    client: httpx.AsyncClient, headers: dict[str, str], slug: str, title: str, body: bytes
) -> str:
    response = await client.post(
        f"/api/v1/tenants/{slug}/documents",
        files={"file": (f"{title}.txt", body)},
        data={"title": title},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def _memberships(app: FastAPI, slug: str) -> list[Membership]:
    async with app.state.database.read_sessionmaker() as session:
        tenant = await session.scalar(select(Tenant).where(Tenant.slug == slug))
        assert tenant is not None
        rows = await session.scalars(select(Membership).where(Membership.tenant_id == tenant.id))
        return list(rows)


async def test_the_creator_becomes_admin_and_can_upload_at_once(
    api: Api, client: httpx.AsyncClient
) -> None:
    admin = await api.admin()
    created = await client.post("/api/v1/tenants", json={"slug": "hr", "name": "HR"}, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["role"] == "admin"
    assert (body["members_count"], body["documents_count"]) == (1, 0)

    members = (await client.get("/api/v1/tenants/hr/members", headers=admin)).json()
    assert [(m["username"], m["role"]) for m in members["items"]] == [("admin", "admin")]
    # The role works on the very next request: upload, list, the audit log.
    await _upload(client, admin, "hr", "handbook", b"Every employee gets 25 days of leave.")
    listed = await client.get("/api/v1/tenants/hr/documents", headers=admin)
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 1

    entries = (await client.get("/api/v1/tenants/hr/audit?limit=100", headers=admin)).json()
    grants = [e for e in entries["items"] if e["action"] == "member.set"]
    assert len(grants) == 1
    assert grants[0]["actor"] == "admin"
    assert grants[0]["outcome"] == "success"
    assert without_request_id(grants[0]["details"]) == {"role": "admin", "previous_role": None}
    created_entry = next(e for e in entries["items"] if e["action"] == "tenant.create")
    assert without_request_id(created_entry["details"]) == {"admin": "creator"}
    verified = await client.get("/api/v1/audit/verify", headers=admin)
    assert verified.json()["ok"] is True


async def test_join_false_leaves_no_membership(
    api: Api, client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await api.admin()
    created = await client.post(
        "/api/v1/tenants", json={"slug": "hr", "name": "HR", "join": False}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert created.json()["role"] is None
    assert created.json()["members_count"] == 0
    assert await _memberships(app, "hr") == []
    members = (await client.get("/api/v1/tenants/hr/members", headers=admin)).json()
    assert members["total"] == 0
    # Managing members, yes; the tenant's content, no.
    refused = await client.post(
        "/api/v1/tenants/hr/documents", files={"file": ("a.txt", b"text")}, headers=admin
    )
    assert_error(refused, 403)
    async with app.state.database.read_sessionmaker() as session:
        actions = list(
            await session.scalars(
                select(AuditEntry.action).where(
                    AuditEntry.tenant_id == key_of(created.json()["id"])
                )
            )
        )
    assert "member.set" not in actions
    assert "tenant.create" in actions


@pytest.mark.parametrize("join", ["false", 0, 1, None, "yes", [True]])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_join_must_be_a_boolean(
    api: Api, client: httpx.AsyncClient, app: FastAPI, join: object
) -> None:
    response = await client.post(
        "/api/v1/tenants",
        json={"slug": "hr", "name": "HR", "join": join},
        headers=await api.admin(),
    )
    assert_error(response, 422)
    async with app.state.database.read_sessionmaker() as session:
        assert await session.scalar(select(Tenant).where(Tenant.slug == "hr")) is None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_only_a_platform_admin_creates_and_no_one_joins_by_asking(
    api: Api, client: httpx.AsyncClient, app: FastAPI
) -> None:
    await api.tenant("eng")
    en = await api.user("en", eng="admin")
    refused = await client.post("/api/v1/tenants", json={"slug": "hr", "name": "HR"}, headers=en)
    assert_error(refused, 403)
    async with app.state.database.read_sessionmaker() as session:
        assert await session.scalar(select(Tenant).where(Tenant.slug == "hr")) is None


async def test_platform_admin_lists_every_tenant_with_metadata_and_no_content(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.tenant("hr")
    await api.tenant("eng")
    ed = await api.user("ed", hr="editor")
    await api.user("vi", hr="viewer")
    en = await api.user("en", eng="admin")
    admin = await api.admin()
    created = await client.post(
        "/api/v1/tenants", json={"slug": "ops", "name": "Ops"}, headers=admin
    )
    assert created.status_code == 201, created.text
    kept = await _upload(client, ed, "hr", "Zanzibar salary bands", b"Band A pays 10.")
    gone = await _upload(client, ed, "hr", "Quokka merger memo", b"We buy Quokka.")
    await _upload(client, en, "eng", "Xylophone design doc", b"Mallets and bars.")
    deleted = await client.delete(f"/api/v1/tenants/hr/documents/{gone}", headers=ed)
    assert deleted.status_code in (200, 202, 204), deleted.text
    assert kept

    response = await client.get("/api/v1/tenants", headers=admin)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == 3
    rows = {t["slug"]: t for t in page["items"]}
    assert [t["slug"] for t in page["items"]] == ["eng", "hr", "ops"]
    for row in page["items"]:
        assert set(row) == LISTED
    assert (rows["hr"]["name"], rows["hr"]["members_count"], rows["hr"]["documents_count"]) == (
        "HR",
        2,
        1,  # the soft-deleted memo is not counted
    )
    assert (rows["eng"]["members_count"], rows["eng"]["documents_count"]) == (1, 1)
    assert (rows["ops"]["members_count"], rows["ops"]["documents_count"]) == (1, 0)
    assert [rows[s]["role"] for s in ("eng", "hr", "ops")] == [None, None, "admin"]
    # Metadata only: not a title, not a word of any document.
    for word in ("Zanzibar", "Quokka", "Xylophone", "Band A", "Mallets"):
        assert word not in response.text

    paged = (await client.get("/api/v1/tenants?limit=1&offset=1", headers=admin)).json()
    assert paged["total"] == 3
    assert [t["slug"] for t in paged["items"]] == ["hr"]


async def test_members_list_only_their_tenants_and_count_only_where_admin(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.tenant("hr")
    await api.tenant("eng")
    vi = await api.user("vi", hr="viewer")
    en = await api.user("en", eng="admin", hr="restricted_viewer")
    nobody = await api.user("nobody")

    viewer = (await client.get("/api/v1/tenants", headers=vi)).json()
    assert viewer["total"] == 1
    assert [(t["slug"], t["role"]) for t in viewer["items"]] == [("hr", "viewer")]
    assert viewer["items"][0]["members_count"] is None
    assert viewer["items"][0]["documents_count"] is None

    both = (await client.get("/api/v1/tenants", headers=en)).json()
    rows = {t["slug"]: t for t in both["items"]}
    assert both["total"] == 2
    assert (rows["eng"]["role"], rows["eng"]["members_count"]) == ("admin", 1)
    assert rows["eng"]["documents_count"] == 0
    # A restricted viewer must not learn how many documents it cannot see.
    assert (rows["hr"]["members_count"], rows["hr"]["documents_count"]) == (None, None)

    empty = (await client.get("/api/v1/tenants", headers=nobody)).json()
    assert (empty["total"], empty["items"]) == (0, [])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_console_names_the_admin(
    api: Api, app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import cli

    monkeypatch.setattr(cli, "get_settings", lambda: app.state.settings)
    await api.user("dana")
    runner = CliRunner()
    # In a thread while this loop keeps running: the app may still be finishing work from the
    # last request (SQLite lets one writer in at a time), which a blocked loop never would.

    made = await asyncio.to_thread(
        runner.invoke, cli.app, ["tenants", "create", "hr", "--name", "HR", "--admin", "Dana"]
    )
    assert made.exit_code == 0, made.output
    assert "dana is now admin in hr" in made.output
    dana = await api.headers("dana")
    listed = (await client.get("/api/v1/tenants", headers=dana)).json()
    assert [(t["slug"], t["role"]) for t in listed["items"]] == [("hr", "admin")]

    bare = await asyncio.to_thread(
        runner.invoke, cli.app, ["tenants", "create", "eng", "--name", "Eng"]
    )
    assert bare.exit_code == 0, bare.output
    assert "no admin yet" in bare.output
    assert await _memberships(app, "eng") == []

    # An unknown admin creates nothing.
    unknown = await asyncio.to_thread(
        runner.invoke, cli.app, ["tenants", "create", "ops", "--name", "Ops", "--admin", "ghost"]
    )
    assert unknown.exit_code == 1
    assert "not found" in unknown.output.lower()
    async with app.state.database.read_sessionmaker() as session:
        assert await session.scalar(select(Tenant).where(Tenant.slug == "ops")) is None
