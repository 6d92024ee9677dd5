"""Issue 12: hard delete that provably reaches everything, on SQLite and PostgreSQL.

A canary document is uploaded, searched, chatted about (an answer quoting it is stored in a
session), then purged. Afterwards its canary occurs in no file under the data folder and not
in the database files (SQLite scanned as bytes, PostgreSQL through pg_dump), no endpoint
returns anything of it, and the receipt says verified with what was removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from app.documents.purge import purge_service
from app.receipts.service import Verification
from tests.chat.conftest import World
from tests.conftest import Api, assert_error, in_thread
from tests.documents.helpers import wait_for

CANARY = "zqcanary5517"
CANARY_DOC = (
    f"Incident register: the {CANARY} valve was replaced after the flood in the east "
    f"basement; the {CANARY} inspection report lists corrosion on every flange."
).encode()
QUESTION = f"What happened to the {CANARY} valve in the east basement?"


async def _purge(
    client: httpx.AsyncClient, headers: dict[str, str], slug: str, doc_id: str
) -> dict[str, Any]:
    response = await client.delete(
        f"/api/v1/tenants/{slug}/documents/{doc_id}?purge=true", headers=headers
    )
    assert response.status_code == 202, response.text
    body = dict(response.json())
    assert body["status"] == "purging"
    return body


async def _receipt(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    slug: str,
    receipt_id: str,
    *,
    until: tuple[str, ...] = ("done",),
    timeout: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(
            f"/api/v1/tenants/{slug}/deletion-receipts/{receipt_id}", headers=headers
        )
        assert response.status_code == 200, response.text
        body = dict(response.json())
        if body["status"] in until:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"receipt still {body['status']}: {body}")
        await asyncio.sleep(0.2)


def _files_with(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                if needle in path.read_bytes():
                    hits.append(path)
            except FileNotFoundError:
                continue
    return hits


def _database_files(url: str) -> list[Path]:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return []
    base = Path(parsed.database)
    return [p for p in (base, Path(f"{base}-wal"), Path(f"{base}-shm")) if p.exists()]


def _pg_dump(url: str) -> bytes:
    parsed = make_url(url)
    return subprocess.run(
        [
            "pg_dump",
            "-h",
            parsed.host or "127.0.0.1",
            "-p",
            str(parsed.port or 5432),
            "-U",
            parsed.username or "postgres",
            parsed.database or "",
        ],
        check=True,
        capture_output=True,
    ).stdout


@pytest.fixture
async def admin(api: Api, world: World) -> dict[str, str]:
    return await api.user("hradmin", hr="admin")


async def _upload(
    client: httpx.AsyncClient, headers: dict[str, str], slug: str, name: str, data: bytes
) -> str:
    response = await client.post(
        f"/api/v1/tenants/{slug}/documents", files={"file": (name, data)}, headers=headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_canary_leaves_no_trace(
    client: httpx.AsyncClient, world: World, admin: dict[str, str], app: FastAPI, backend: str
) -> None:
    settings = app.state.settings
    doc_id = await _upload(client, admin, "hr", "incident-zqcanary5517.txt", CANARY_DOC)
    assert (await wait_for(client, admin, "hr", doc_id))["status"] == "ready"
    hits = await client.post(
        "/api/v1/tenants/hr/search", json={"query": f"{CANARY} valve"}, headers=admin
    )
    assert doc_id in {h["document_id"] for h in hits.json()["hits"]}
    chat = (
        await client.post("/api/v1/tenants/hr/chat", json={"question": QUESTION}, headers=admin)
    ).json()
    assert CANARY in chat["answer"]
    session_id = chat["session_id"]
    # Before: the canary is on disk (shards, stored file) and in the database.
    assert _files_with(settings.data_dir, CANARY.encode())

    accepted = await _purge(client, admin, "hr", doc_id)
    receipt = await _receipt(client, admin, "hr", accepted["receipt_id"])

    assert receipt["verification"]["passed"] is True
    names = {c["name"] for c in receipt["verification"]["checks"]}
    assert {"bm25_own_terms", "faiss_own_vectors", "shard_files", "stored_file"} <= names
    removed = receipt["removed"]
    assert removed["chunks"] >= 1
    assert removed["vectors"] == removed["chunks"]
    assert removed["postings"] == removed["chunks"]
    assert removed["files"] >= 1
    assert removed["messages"] == 2  # the question and the answer that quoted it
    assert "pending_chunk_ids" not in removed
    assert receipt["document_id"] == doc_id
    assert receipt["completed_at"] is not None
    assert receipt["receipt_hash"]

    # Nothing of it on disk: data folder (shards of every version, stored files, secrets,
    # caches) and the database itself.
    assert _files_with(settings.data_dir, CANARY.encode()) == []
    for path in _database_files(settings.database_url):
        assert CANARY.encode() not in path.read_bytes(), path
    if backend == "postgres":
        assert CANARY.encode() not in _pg_dump(settings.database_url)
    # The title (here the file name) survives only as the receipt's keyed digest.
    assert _files_with(settings.data_dir, b"incident-zqcanary") == []

    # Nothing of it through the API.
    assert_error(await client.get(f"/api/v1/tenants/hr/documents/{doc_id}", headers=admin), 404)
    for mode in ("hybrid", "bm25", "vector"):
        found = await client.post(
            "/api/v1/tenants/hr/search",
            json={"query": f"{CANARY} valve flange", "mode": mode},
            headers=admin,
        )
        assert CANARY not in found.text
    again = await client.post(
        "/api/v1/tenants/hr/chat",
        json={"question": "What happened to the valve in the east basement after the flood?"},
        headers=admin,
    )
    assert again.status_code == 200, again.text
    assert CANARY not in again.text
    session = await client.get(f"/api/v1/tenants/hr/chat/sessions/{session_id}", headers=admin)
    assert CANARY not in session.text
    completion = await client.post(
        "/v1/chat/completions",
        json={"model": "cairn:hr", "messages": [{"role": "user", "content": "flood basement"}]},
        headers=admin,
    )
    assert completion.status_code == 200, completion.text
    assert CANARY not in completion.text
    # The receipt is chained into the tenant's audit log, and the log still verifies.
    # (The action filter matches as "contains": the purge's request entry comes back too.)
    audit = await client.get("/api/v1/tenants/hr/audit?action=document.purge", headers=admin)
    assert [
        e["details"]["receipt_hash"]
        for e in audit.json()["items"]
        if e["action"] == "document.purge"
    ] == [receipt["receipt_hash"]]
    verify = await client.get("/api/v1/tenants/hr/audit/verify", headers=admin)
    assert verify.json()["ok"] is True


async def test_the_same_file_in_another_tenant_is_neither_touched_nor_mentioned(
    client: httpx.AsyncClient, world: World, admin: dict[str, str]
) -> None:
    eng = world.users["eng"]
    ours = await _upload(client, admin, "hr", "shared.txt", CANARY_DOC)
    theirs = await _upload(client, eng, "eng", "shared.txt", CANARY_DOC)
    assert (await wait_for(client, admin, "hr", ours))["status"] == "ready"
    assert (await wait_for(client, eng, "eng", theirs))["status"] == "ready"
    accepted = await _purge(client, admin, "hr", ours)
    receipt = await _receipt(client, admin, "hr", accepted["receipt_id"])
    stored = [c for c in receipt["verification"]["checks"] if c["name"] == "stored_file"]
    # Files are per tenant (issue 21, item 4): ours is removed, and the receipt cannot tell
    # that another tenant holds the same bytes.
    assert stored == [{"name": "stored_file", "passed": True, "detail": "removed"}]
    assert (await client.get(f"/api/v1/tenants/eng/documents/{theirs}", headers=eng)).json()[
        "status"
    ] == "ready"
    hits = await client.post(
        "/api/v1/tenants/eng/search", json={"query": f"{CANARY} valve"}, headers=eng
    )
    assert theirs in {h["document_id"] for h in hits.json()["hits"]}
    chat = await client.post("/api/v1/tenants/eng/chat", json={"question": QUESTION}, headers=eng)
    assert CANARY in chat.json()["answer"]


async def test_purge_during_ingestion_ends_purged(
    client: httpx.AsyncClient, world: World, admin: dict[str, str], app: FastAPI
) -> None:
    text = (
        " ".join(f"{CANARY} paragraph {n} about pumps and valves." for n in range(400))
    ).encode()
    doc_id = await _upload(client, admin, "hr", "big.txt", text)
    accepted = await _purge(client, admin, "hr", doc_id)
    receipt = await _receipt(client, admin, "hr", accepted["receipt_id"])
    assert receipt["verification"]["passed"] is True
    # Let any ingestion still in flight finish: it must not bring the document back.
    await asyncio.sleep(2)
    assert_error(await client.get(f"/api/v1/tenants/hr/documents/{doc_id}", headers=admin), 404)
    hits = await client.post(
        "/api/v1/tenants/hr/search", json={"query": f"{CANARY} pumps"}, headers=admin
    )
    assert CANARY not in hits.text


async def test_failed_verification_is_never_reported_done(
    client: httpx.AsyncClient,
    world: World,
    admin: dict[str, str],
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(self: object, *args: object) -> None:
        verification = args[-1]
        assert isinstance(verification, Verification)
        verification.check("shard_files", False, "forced by the test")

    monkeypatch.setattr(type(purge_service), "_check_stores", broken)
    monkeypatch.setattr(app.state.settings.worker, "backoff_seconds", 0.1)
    doc_id = await _upload(client, admin, "hr", "kept.txt", CANARY_DOC)
    assert (await wait_for(client, admin, "hr", doc_id))["status"] == "ready"
    accepted = await _purge(client, admin, "hr", doc_id)
    receipt = await _receipt(client, admin, "hr", accepted["receipt_id"], until=("failed",))
    assert receipt["completed_at"] is None
    assert receipt["receipt_hash"] is None
    assert "forced by the test" in receipt["error"]
    listed = await client.get("/api/v1/tenants/hr/deletion-receipts", headers=admin)
    assert [r["status"] for r in listed.json()["items"]] == ["failed"]
    # The document stays, hidden from search and chat, as `purging` with the reason.
    document = (await client.get(f"/api/v1/tenants/hr/documents/{doc_id}", headers=admin)).json()
    assert document["status"] == "purging"
    assert document["error_code"] == "purge_failed"
    assert "forced by the test" in document["error"]


async def test_retention_purge_on_a_controlled_clock(
    client: httpx.AsyncClient, world: World, admin: dict[str, str], app: FastAPI
) -> None:
    runtime = app.state.runtime
    doc_id = await _upload(client, admin, "hr", "old.txt", CANARY_DOC)
    assert (await wait_for(client, admin, "hr", doc_id))["status"] == "ready"
    deleted = await client.delete(f"/api/v1/tenants/hr/documents/{doc_id}", headers=admin)
    assert deleted.status_code == 202
    assert await purge_service.purge_expired(runtime) == 0
    later = runtime.now() + timedelta(days=app.state.settings.retention_days, minutes=1)
    runtime.now = lambda: later
    assert await purge_service.purge_expired(runtime) == 1
    assert await purge_service.purge_expired(runtime) == 0  # already under way
    listed = await client.get("/api/v1/tenants/hr/deletion-receipts", headers=admin)
    receipt_id = listed.json()["items"][0]["id"]
    receipt = await _receipt(client, admin, "hr", receipt_id)
    assert receipt["requested_by"] is None
    assert_error(await client.get(f"/api/v1/tenants/hr/documents/{doc_id}", headers=admin), 404)


async def test_a_tenant_retention_window_overrides_the_default(
    client: httpx.AsyncClient, world: World, admin: dict[str, str], app: FastAPI
) -> None:
    runtime = app.state.runtime
    doc_id = await _upload(client, admin, "hr", "brief.txt", CANARY_DOC)
    assert (await wait_for(client, admin, "hr", doc_id))["status"] == "ready"
    assert (
        await client.delete(f"/api/v1/tenants/hr/documents/{doc_id}", headers=admin)
    ).status_code == 202
    assert await purge_service.purge_expired(runtime) == 0
    updated = await client.patch("/api/v1/tenants/hr", json={"retention_days": 0}, headers=admin)
    assert updated.json()["retention_days"] == 0
    assert await purge_service.purge_expired(runtime) == 1
    bad = await client.patch("/api/v1/tenants/hr", json={"retention_days": -1}, headers=admin)
    assert_error(bad, 422)


async def test_who_may_purge(
    client: httpx.AsyncClient, world: World, admin: dict[str, str]
) -> None:
    doc_id = await _upload(client, admin, "hr", "who.txt", CANARY_DOC)
    purge = f"/api/v1/tenants/hr/documents/{doc_id}?purge=true"
    assert_error(await client.delete(purge), 401)
    assert_error(await client.delete(purge, headers=world.users["editor"]), 403)
    assert_error(await client.delete(purge, headers=world.users["eng"]), 404)
    assert_error(
        await client.get("/api/v1/tenants/hr/deletion-receipts", headers=world.users["viewer"]),
        403,
    )
    auditor = await client.get(
        "/api/v1/tenants/hr/deletion-receipts", headers=world.users["auditor"]
    )
    assert auditor.status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_purge_from_the_console(
    client: httpx.AsyncClient,
    world: World,
    admin: dict[str, str],
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app import cli

    monkeypatch.setattr(cli, "get_settings", lambda: app.state.settings)
    runner = CliRunner()
    now_id = await _upload(client, admin, "hr", "now.txt", CANARY_DOC)
    later_id = await _upload(client, admin, "hr", "later.txt", CANARY_DOC + b" second copy")
    for doc_id in (now_id, later_id):
        assert (await wait_for(client, admin, "hr", doc_id))["status"] == "ready"

    purged = in_thread(runner.invoke, cli.app, ["documents", "purge", now_id, "--tenant", "hr"])
    assert purged.exit_code == 0, purged.output
    receipt = json.loads(purged.output)
    assert receipt["status"] == "done"
    assert receipt["verification"]["passed"] is True
    assert_error(await client.get(f"/api/v1/tenants/hr/documents/{now_id}", headers=admin), 404)

    for args, message in [
        (["documents", "purge", "42", "--tenant", "hr"], "not a document id"),
        (["documents", "purge", later_id, "--tenant", "nope"], "tenant 'nope' not found"),
    ]:
        refused = in_thread(runner.invoke, cli.app, args)
        assert refused.exit_code == 1, refused.output
        assert message in refused.output.lower()

    # Soft-deleted with a zero-day window: due now. A dry run lists it and removes nothing.
    assert (
        await client.delete(f"/api/v1/tenants/hr/documents/{later_id}", headers=admin)
    ).status_code == 202
    await client.patch("/api/v1/tenants/hr", json={"retention_days": 0}, headers=admin)
    dry = in_thread(runner.invoke, cli.app, ["purge", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert [d["document_id"] for d in json.loads(dry.output)["would_purge"]] == [later_id]
    listed = await client.get("/api/v1/tenants/hr/documents?status=deleted", headers=admin)
    assert later_id in {d["id"] for d in listed.json()["items"]}

    done = in_thread(runner.invoke, cli.app, ["purge"])
    assert done.exit_code == 0, done.output
    assert [d["document_id"] for d in json.loads(done.output)["purged"]] == [later_id]
    receipts = (await client.get("/api/v1/tenants/hr/deletion-receipts", headers=admin)).json()
    assert {r["status"] for r in receipts["items"]} == {"done"}
    assert len(receipts["items"]) == 2
    again = in_thread(runner.invoke, cli.app, ["purge", "--dry-run"])
    assert json.loads(again.output)["would_purge"] == []
