"""Issue 23, readable governance and actor type: the audit listing names people only where the
reader may see them and the server's own work by name; the action filter matches a part of the
name in any case; the tenant's log exports as CSV and JSON Lines (auditor and admin only,
streamed, audited, safe from spreadsheet formulas)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.audit.export import CSV_COLUMNS, safe_cell
from app.audit.service import audit_service
from app.documents.purge import purge_service
from app.kit.actor import SystemActor
from tests.conftest import Api, assert_error
from tests.documents.helpers import wait_for
from tests.helpers import key_of

AUDIT = "/api/v1/tenants/hr/audit"
EXPORT = "/api/v1/tenants/hr/audit/export"


class Hr:
    def __init__(self, **headers: dict[str, str]) -> None:
        self.h = headers


@pytest.fixture
async def hr(api: Api, client: httpx.AsyncClient) -> Hr:
    """Tenant hr (admin, auditor, editor, viewer) and eng, whose admin also once acted in hr."""
    await api.tenant("hr")
    await api.tenant("eng")
    hr = Hr(
        admin=await api.user("hradmin", hr="admin"),
        auditor=await api.user("audrey", hr="auditor"),
        editor=await api.user("ed", hr="editor"),
        viewer=await api.user("vi", hr="viewer"),
        outsider=await api.user("otto", eng="admin", hr="viewer"),
    )
    # otto acts in hr (a search), then loses his role there: an outsider to hr's readers now.
    searched = await client.post(
        "/api/v1/tenants/hr/search", json={"query": "anything"}, headers=hr.h["outsider"]
    )
    assert searched.status_code == 200, searched.text
    removed = await client.delete("/api/v1/tenants/hr/members/otto", headers=hr.h["admin"])
    assert removed.status_code == 204, removed.text
    return hr


async def _items(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get(AUDIT, params={"limit": 200, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_names_only_where_the_reader_may_see_them(
    hr: Hr, client: httpx.AsyncClient, api: Api
) -> None:
    items = await _items(client, hr.h["auditor"])
    searches = [e for e in items if e["action"] == "search.query"]
    assert [(e["actor_kind"], e["actor"]) for e in searches] == [("outside", None)]
    assert "otto" not in json.dumps(items)
    granted = [e for e in items if e["action"] == "member.set" and e["outcome"] == "success"]
    # The platform admin who granted the roles holds no role in hr: not named to the auditor.
    assert {(e["actor_kind"], e["actor"]) for e in granted} == {("outside", None)}
    # A member is named; a platform admin reading (with a role in hr) sees every account.
    mine = await _items(client, hr.h["auditor"], action="member.remove")
    assert [(e["actor_kind"], e["actor"]) for e in mine] == [("user", "hradmin")]
    await api.member("hr", "admin", "auditor")
    as_platform = await _items(client, await api.admin(), action="search")
    assert [(e["actor_kind"], e["actor"]) for e in as_platform] == [("user", "otto")]
    # Filtering by a person the reader may not see finds nothing (not even that they acted).
    assert await _items(client, hr.h["auditor"], actor="otto") == []
    assert await _items(client, hr.h["auditor"], actor="nobody-at-all") == []
    assert len(await _items(client, hr.h["auditor"], actor="hradmin")) >= 1


async def test_the_action_filter_matches_a_part_in_any_case(
    hr: Hr, client: httpx.AsyncClient
) -> None:
    members = await _items(client, hr.h["auditor"], action="MEMBER.")
    assert members
    assert {e["action"] for e in members} == {"member.set", "member.remove"}
    assert await _items(client, hr.h["auditor"], action="%") == []  # a literal, not a wildcard
    assert await _items(client, hr.h["auditor"], action="_") == []
    assert_error(await client.get(AUDIT, params={"action": "x" * 65}, headers=hr.h["auditor"]), 422)
    assert_error(
        await client.get(EXPORT, params={"action": "x" * 65}, headers=hr.h["auditor"]), 422
    )


async def test_export_roles(hr: Hr, client: httpx.AsyncClient, api: Api) -> None:
    for role in ("auditor", "admin"):
        response = await client.get(EXPORT, params={"format": "jsonl"}, headers=hr.h[role])
        assert response.status_code == 200, (role, response.text)
    for role in ("editor", "viewer"):
        assert_error(await client.get(EXPORT, headers=hr.h[role]), 403)
    assert_error(await client.get(EXPORT), 401)
    # eng's admin: hr is not his tenant any more (404, as for a tenant that does not exist).
    assert_error(await client.get(EXPORT, headers=hr.h["outsider"]), 404)
    assert_error(await client.get("/api/v1/tenants/nope/audit/export", headers=hr.h["admin"]), 404)
    assert_error(await client.get(EXPORT, params={"format": "xlsx"}, headers=hr.h["admin"]), 422)


async def test_export_both_formats_match_the_listing(hr: Hr, client: httpx.AsyncClient) -> None:
    listed = await _items(client, hr.h["auditor"], action="member")
    jsonl = await client.get(
        EXPORT, params={"format": "jsonl", "action": "member"}, headers=hr.h["auditor"]
    )
    assert jsonl.status_code == 200
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in jsonl.headers["content-disposition"]
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    # Oldest first; the listing is newest first.
    assert [r["id"] for r in rows] == [e["id"] for e in reversed(listed)]
    assert all(len(r["entry_hash"]) == 64 for r in rows)
    assert {(r["actor_kind"], r["actor"]) for r in rows} == {
        (e["actor_kind"], e["actor"]) for e in listed
    }
    response = await client.get(
        EXPORT, params={"format": "csv", "action": "member"}, headers=hr.h["auditor"]
    )
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [row[0] for row in table[1:]] == [r["id"] for r in rows]
    assert all(json.loads(row[CSV_COLUMNS.index("details")]) is not None for row in table[1:])


async def test_the_export_is_audited(hr: Hr, client: httpx.AsyncClient) -> None:
    before = len(await _items(client, hr.h["admin"], action="audit.export"))
    await client.get(EXPORT, params={"format": "csv", "actor": "ed"}, headers=hr.h["admin"])
    after = await _items(client, hr.h["admin"], action="audit.export")
    assert len(after) == before + 1
    assert after[0]["actor"] == "hradmin"
    assert after[0]["details"]["format"] == "csv"
    assert after[0]["details"]["filtered"] is True
    # The exported log still verifies.
    verified = await client.get(f"{AUDIT}/verify", headers=hr.h["auditor"])
    assert verified.json()["ok"] is True


def test_csv_cells_cannot_become_formulas() -> None:
    for hostile in ("=1+1", "+cmd", "-2+3", "@SUM(A1)", "\t=x", "\r=x"):
        assert safe_cell(hostile) == "'" + hostile
    assert safe_cell("doc_abc") == "doc_abc"
    assert safe_cell(None) == ""
    assert safe_cell(7) == "7"


async def test_exported_cells_are_escaped(hr: Hr, client: httpx.AsyncClient, app: FastAPI) -> None:
    tenant_id = await _tenant_id(client, hr)
    async with app.state.database.sessionmaker() as session, session.begin():
        await audit_service.record(
            session,
            action="=cmd|' /C calc'!A0",
            actor=SystemActor.OPERATOR,
            tenant_id=tenant_id,
            target_type="@evil",
            target_id="-1+1",
            details={"reason": "+SUM(1)"},
        )
    response = await client.get(
        EXPORT, params={"format": "csv", "action": "cmd"}, headers=hr.h["auditor"]
    )
    [row] = list(csv.reader(io.StringIO(response.text)))[1:]
    cells = dict(zip(CSV_COLUMNS, row, strict=True))
    assert cells["action"] == "'=cmd|' /C calc'!A0"
    assert cells["target_type"] == "'@evil"
    assert cells["target_id"] == "'-1+1"
    assert cells["actor"] == "operator"
    for cell in row:
        assert not cell.startswith(("=", "+", "-", "@")), cell


async def _tenant_id(client: httpx.AsyncClient, hr: Hr) -> int:
    tenant = (await client.get("/api/v1/tenants/hr", headers=hr.h["admin"])).json()
    return key_of(tenant["id"])


async def _receipt_done(client: httpx.AsyncClient, headers: dict[str, str], receipt: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = (
            await client.get(f"/api/v1/tenants/hr/deletion-receipts/{receipt}", headers=headers)
        ).json()
        if body["status"] == "done":
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"receipt {receipt} not done")


async def _ready(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> str:
    response = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": (name, f"# {name}\n\nPelicans nest by the {name} river.\n".encode())},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    doc_id = str(response.json()["id"])
    assert (await wait_for(client, headers, "hr", doc_id))["status"] == "ready"
    return doc_id


async def test_purge_and_retention_entries_name_their_actor(
    hr: Hr, client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = hr.h["admin"]
    asked = await _ready(client, admin, "asked")
    aged = await _ready(client, admin, "aged")
    # A purge a person asked for names that person, request and completion alike.
    purged = await client.delete(f"/api/v1/tenants/hr/documents/{asked}?purge=true", headers=admin)
    assert purged.status_code == 202, purged.text
    await _receipt_done(client, admin, purged.json()["receipt_id"])
    # One the retention purge asked for names the retention purge.
    assert (await client.delete(f"/api/v1/tenants/hr/documents/{aged}", headers=admin)).is_success
    runtime = app.state.runtime
    later = runtime.now() + timedelta(days=app.state.settings.retention_days, minutes=1)
    runtime.now = lambda: later
    assert await purge_service.purge_expired(runtime) == 1
    receipts = (await client.get("/api/v1/tenants/hr/deletion-receipts", headers=admin)).json()
    await _receipt_done(client, admin, receipts["items"][0]["id"])

    entries = await _items(client, hr.h["auditor"], action="document.purge")
    listed = await client.get("/api/v1/tenants/hr/deletion-receipts", headers=admin)
    subject = {r["id"]: r["document_id"] for r in listed.json()["items"]}
    by_target: dict[str, set[tuple[str, str, str | None]]] = {}
    for e in entries:
        target = e["target_id"] if e["target_type"] == "document" else subject[e["target_id"]]
        by_target.setdefault(target, set()).add((e["action"], e["actor_kind"], e["actor"]))
    assert by_target[asked] == {
        ("document.purge_request", "user", "hradmin"),
        ("document.purge", "user", "hradmin"),
    }
    assert by_target[aged] == {
        ("document.purge_request", "system", "retention_purge"),
        ("document.purge", "system", "retention_purge"),
    }
    system = await _items(client, hr.h["auditor"], actor="system:retention_purge")
    assert {e["action"] for e in system} == {"document.purge_request", "document.purge"}
    verified = await client.get(f"{AUDIT}/verify", headers=hr.h["auditor"])
    assert verified.json()["ok"] is True, verified.json()
