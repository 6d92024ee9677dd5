"""The audit log detects any edit, deletion or reordering made directly in the database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from app.kit.public_ids import IdKind
from app.models import AuditEntry
from tests.conftest import Api, assert_error
from tests.helpers import key_of, public_of


async def _entries(app: FastAPI, chain: str) -> list[AuditEntry]:
    async with app.state.database.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq)
        )
        return list(rows)


async def _sql(app: FastAPI, statement: str, **params: Any) -> None:
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(text(statement), params)


async def _verify(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/api/v1/tenants/hr/audit/verify", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
async def chain(api: Api, client: httpx.AsyncClient, app: FastAPI) -> tuple[str, dict[str, str]]:
    tenant = await api.tenant("hr")
    auditor = await api.user("audrey", hr="auditor")
    for name in ("u1", "u2", "u3"):
        await api.user(name, hr="viewer")
    await api.member("hr", "u1", "editor")
    name = f"tenant:{key_of(tenant['id'])}"
    assert len(await _entries(app, name)) >= 6
    report = await _verify(client, auditor)
    # (The periodic audit_checkpoint job may already have signed checkpoints: not counted here.)
    assert {k: v for k, v in report.items() if k != "checkpoints"} == {
        "ok": True,
        "entries": len(await _entries(app, name)),
        "first_bad": None,
    }
    return name, auditor


async def test_edit_is_detected_at_that_row(
    chain: tuple[str, dict[str, str]], app: FastAPI, client: httpx.AsyncClient
) -> None:
    name, auditor = chain
    target = (await _entries(app, name))[3]
    await _sql(
        app,
        "UPDATE audit_entries SET details = :d WHERE id = :i",
        d='{"role":"admin"}',
        i=target.id,
    )
    report = await _verify(client, auditor)
    assert report["ok"] is False
    assert report["first_bad"]["seq"] == target.seq
    assert report["first_bad"]["id"] == public_of(IdKind.AUDIT_ENTRY, target.id)


async def test_timestamp_or_action_edit_is_detected(
    chain: tuple[str, dict[str, str]], app: FastAPI, client: httpx.AsyncClient
) -> None:
    name, auditor = chain
    target = (await _entries(app, name))[2]
    await _sql(app, "UPDATE audit_entries SET action = 'member.remove' WHERE id = :i", i=target.id)
    assert (await _verify(client, auditor))["first_bad"]["seq"] == target.seq


async def test_deletion_is_detected_at_that_position(
    chain: tuple[str, dict[str, str]], app: FastAPI, client: httpx.AsyncClient
) -> None:
    name, auditor = chain
    target = (await _entries(app, name))[2]
    await _sql(app, "DELETE FROM audit_entries WHERE id = :i", i=target.id)
    report = await _verify(client, auditor)
    assert report["ok"] is False
    assert report["first_bad"]["seq"] == target.seq
    assert "gap" in report["first_bad"]["reason"]


async def test_deleting_the_newest_entry_is_detected(
    chain: tuple[str, dict[str, str]], app: FastAPI, client: httpx.AsyncClient
) -> None:
    name, auditor = chain
    last = (await _entries(app, name))[-1]
    await _sql(app, "DELETE FROM audit_entries WHERE id = :i", i=last.id)
    report = await _verify(client, auditor)
    assert report["ok"] is False
    assert report["first_bad"]["seq"] == last.seq


async def test_reordering_is_detected(
    chain: tuple[str, dict[str, str]], app: FastAPI, client: httpx.AsyncClient
) -> None:
    name, auditor = chain
    rows = await _entries(app, name)
    a, b = rows[1], rows[4]
    await _sql(app, "UPDATE audit_entries SET seq = -1 WHERE id = :i", i=a.id)
    await _sql(app, "UPDATE audit_entries SET seq = :s WHERE id = :i", s=a.seq, i=b.id)
    await _sql(app, "UPDATE audit_entries SET seq = :s WHERE id = :i", s=b.seq, i=a.id)
    report = await _verify(client, auditor)
    assert report["ok"] is False
    assert report["first_bad"]["seq"] == a.seq


async def test_actor_edit_is_detected(
    chain: tuple[str, dict[str, str]], app: FastAPI, client: httpx.AsyncClient
) -> None:
    name, auditor = chain
    rows = [r for r in await _entries(app, name) if r.actor_id is not None]
    target = rows[-1]
    await _sql(
        app, "UPDATE audit_entries SET actor_name = 'someone-else' WHERE id = :i", i=target.id
    )
    first_bad = (await _verify(client, auditor))["first_bad"]
    assert first_bad["id"] == public_of(IdKind.AUDIT_ENTRY, target.id)
    assert first_bad["reason"] == "actor does not match its commitment"


async def test_blanking_the_actor_columns_is_detected(
    chain: tuple[str, dict[str, str]], app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Blank columns are what an erasure leaves, but only an erasure re-seals the entry
    (tests/audit/test_actor_seal.py has the erasure that still verifies)."""
    name, auditor = chain
    target = [r for r in await _entries(app, name) if r.actor_id is not None][1]
    await _sql(
        app,
        "UPDATE audit_entries SET actor_name = NULL, actor_id = NULL WHERE id = :i",
        i=target.id,
    )
    report = await _verify(client, auditor)
    assert report["ok"] is False
    assert report["first_bad"]["id"] == public_of(IdKind.AUDIT_ENTRY, target.id)
    assert report["first_bad"]["seq"] == target.seq
    assert report["first_bad"]["reason"] == "actor blanked without an erasure"


async def test_auditor_reads_the_log_but_no_documents(
    chain: tuple[str, dict[str, str]], client: httpx.AsyncClient, app: FastAPI
) -> None:
    _, auditor = chain
    listing = await client.get("/api/v1/tenants/hr/audit?action=member.set", headers=auditor)
    assert listing.status_code == 200
    items = listing.json()["items"]
    assert items
    assert all(e["action"] == "member.set" for e in items)
    assert listing.json()["total"] == len(items)
    me = (await client.get("/api/v1/users/me", headers=auditor)).json()
    tenant = (await client.get("/api/v1/tenants/hr", headers=auditor)).json()
    enforcer = app.state.enforcer
    domain = f"tenant:{key_of(tenant['id'])}"
    for act in ("read", "write", "purge"):
        assert not enforcer.allowed(key_of(me["id"]), domain, "documents", act)
    assert not enforcer.allowed(key_of(me["id"]), domain, "search", "query")
    assert enforcer.sensitivity_levels(key_of(me["id"]), key_of(tenant["id"])) == ()


async def test_log_never_holds_secrets(api: Api, client: httpx.AsyncClient, app: FastAPI) -> None:
    await api.tenant("hr")
    headers = await api.user("ivy", hr="viewer")
    key = (await client.post("/api/v1/api-keys", json={}, headers=headers)).json()["key"]
    await client.post("/api/v1/auth/token", data={"username": "ivy", "password": "typo-secret-pw"})
    async with app.state.database.sessionmaker() as session:
        dump = " ".join(
            f"{e.details} {e.actor_name} {e.target_id}"
            for e in await session.scalars(select(AuditEntry))
        )
    for secret in (key, "ivy-password", "typo-secret-pw"):
        assert secret not in dump


async def test_platform_verify_covers_only_permitted_chains(
    chain: tuple[str, dict[str, str]], api: Api, client: httpx.AsyncClient
) -> None:
    _, auditor = chain
    mine = await client.get("/api/v1/audit/verify", headers=auditor)
    tenant_only = await client.get("/api/v1/tenants/hr/audit/verify", headers=auditor)
    # The auditor's global verify covers exactly its tenant's chain, no one else's counts.
    assert mine.json() == tenant_only.json()
    platform = await client.get("/api/v1/audit/verify", headers=await api.admin())
    assert platform.status_code == 200
    assert platform.json()["ok"] is True
    outsider = await api.user("outsider")
    empty = await client.get("/api/v1/audit/verify", headers=outsider)
    assert empty.json() == {"ok": True, "entries": 0, "first_bad": None, "checkpoints": 0}
    assert_error(await client.get("/api/v1/tenants/hr/audit/verify", headers=outsider), 404)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_cli_verify_exits_nonzero_after_tampering(
    chain: tuple[str, dict[str, str]], app: FastAPI, settings: Any
) -> None:
    env = {
        **os.environ,
        "CAIRN_DATABASE_URL": settings.database_url,
        "CAIRN_AUDIT_SECRET": settings.audit_secret,
        "CAIRN_DATA_DIR": str(settings.data_dir),
    }
    command = [sys.executable, "-m", "app.cli", "audit", "verify"]
    # In a thread: blocking the event loop would freeze the app's worker pool mid-transaction.
    ok = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert '"ok": true' in ok.stdout
    await _sql(app, "UPDATE audit_entries SET outcome = 'failure' WHERE seq = 2")
    bad = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1
    assert '"ok": false' in bad.stdout
