"""A person's data: the export holds everything about them (GDPR article 15); the erasure
removes it, leaves their uploads with the tenant, keeps every audit chain verifying and
leaves neither their username nor their e-mail anywhere in the database (article 17)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from app.audit.chain import actor_commitment
from app.audit.checkpoints import CheckpointLog
from app.audit.service import audit_service
from app.generation.provider import GeneratorProvider
from app.kit.settings import Settings
from app.models import (
    APIKey,
    AuditEntry,
    ChatMessage,
    ChatSession,
    DeletionReceipt,
    Document,
    User,
)
from tests.chat.doubles import EchoGenerator, limited
from tests.conftest import TEST_AUDIT_SECRET, Api, assert_error, in_thread, make_settings
from tests.documents.helpers import wait_for
from tests.helpers import key_of, without_request_id

USERNAME = "zq-erasable-7731"
EMAIL = "zq7731@example.org"
PASSWORD = "zq-erasable-7731-passphrase"
QUESTION = "How many days of paid vacation does every employee receive per year?"
PUBLIC_ID = re.compile(r"^[a-z]{3}_[0-9a-f]{32}$")


@dataclass
class Person:
    headers: dict[str, str]
    api_key: str
    api_key_id: str
    document_id: str
    session_id: str
    colleague: dict[str, str]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The echo double answers with its whole prompt, instructions included, which the
    # faithfulness check reads as a refusal (no citations): the export is about what was stored,
    # so the answer stays unchecked here (tests/chat/test_faithfulness.py covers the check).
    return make_settings(database_url, tmp_path / "data", chat={"unsupported_answer": "off"})


@pytest.fixture
async def person(app: FastAPI, api: Api, client: httpx.AsyncClient) -> Person:
    """An hr editor with an e-mail who uploaded a document, chatted and made an API key."""
    app.state.generator = GeneratorProvider(app.state.settings, limited(EchoGenerator()))
    await api.tenant("hr")
    colleague = await api.user("hradmin", hr="admin")
    created = await client.post(
        "/api/v1/users",
        json={"username": USERNAME, "password": PASSWORD, "email": EMAIL},
        headers=await api.admin(),
    )
    assert created.status_code == 201, created.text
    await api.member("hr", USERNAME, "editor")
    headers = await api.headers(USERNAME, PASSWORD)
    uploaded = await client.post(
        "/api/v1/tenants/hr/documents",
        files={
            "file": (
                "vacation.txt",
                b"Vacation policy: every employee receives twenty five "
                b"days of paid vacation per year.",
            )
        },
        headers=headers,
    )
    assert uploaded.status_code == 202, uploaded.text
    document_id = uploaded.json()["id"]
    assert (await wait_for(client, headers, "hr", document_id))["status"] == "ready"
    answered = await client.post(
        "/api/v1/tenants/hr/chat", json={"question": QUESTION}, headers=headers
    )
    assert answered.status_code == 200, answered.text
    key = await client.post("/api/v1/api-keys", json={"name": "laptop"}, headers=headers)
    assert key.status_code == 201, key.text
    return Person(
        headers=headers,
        api_key=key.json()["key"],
        api_key_id=key.json()["id"],
        document_id=document_id,
        session_id=answered.json()["session_id"],
        colleague=colleague,
    )


async def _export(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/privacy/export", params={"username": USERNAME}, headers=headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _ids(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) under a key that names an id."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "id" or key.endswith(("_id", "_ids")):
                found.append((f"{path}.{key}", item))
            found += _ids(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found += _ids(item, f"{path}[{n}]")
    return found


async def test_export_holds_everything_about_the_person(
    api: Api, client: httpx.AsyncClient, person: Person
) -> None:
    mine = await _export(client, person.headers)
    assert mine["format"] == "cairn.privacy-export.v1"
    assert mine["account"]["username"] == USERNAME
    assert mine["account"]["email"] == EMAIL
    assert [(m["tenant"], m["role"]) for m in mine["memberships"]] == [("hr", "editor")]
    # Key metadata, never the key or its hash.
    assert [(k["id"], k["name"]) for k in mine["api_keys"]] == [(person.api_key_id, "laptop")]
    assert "key_hash" not in json.dumps(mine)
    assert person.api_key not in json.dumps(mine)
    [chat] = mine["chat_sessions"]
    assert chat["id"] == person.session_id
    assert chat["tenant"] == "hr"
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
    assert chat["messages"][0]["content"] == QUESTION
    assert chat["messages"][1]["content"]
    assert chat["messages"][1]["withheld"] is False
    # As the person's chat history shows it: what the check made of the answer, and quotes.
    answer = chat["messages"][1]
    assert (answer["grounded"], answer["check"], answer["note"]) == (True, "unchecked", None)
    assert all("quote" in c for c in answer["citations"])
    assert chat["messages"][0]["check"] is None
    [document] = mine["documents"]
    assert document["id"] == person.document_id
    assert document["filename"] == "vacation.txt"
    assert document["tenant"] == "hr"
    actions = {(e["action"], e["by_subject"]) for e in mine["audit_entries"]}
    assert {
        ("user.create", False),
        ("member.set", False),
        ("auth.login", True),
        ("document.upload", True),
        ("chat.ask", True),
        ("api_key.create", True),
    } <= actions
    for entry in mine["audit_entries"]:
        # Other people who acted on the account are not named.
        assert entry["actor"] == (USERNAME if entry["by_subject"] else None)

    assert mine["content_withheld"] == []

    # A platform admin gets the account, but no tenant's content (issue 21, item 5) ...
    admin = await api.admin()
    outside = await _export(client, admin)
    for part in ("account", "memberships", "api_keys"):
        assert outside[part] == mine[part]
    assert (outside["chat_sessions"], outside["documents"]) == ([], [])
    assert outside["content_withheld"] == ["hr"]
    assert {e["chain"] for e in outside["audit_entries"]} == {"global"}
    assert QUESTION not in json.dumps(outside)
    # ... unless they are an admin of that tenant: then the same as the person's own.
    await api.member("hr", "admin", "admin")
    theirs = await _export(client, admin)
    for part in ("account", "memberships", "api_keys", "chat_sessions", "documents"):
        assert theirs[part] == mine[part]
    assert theirs["content_withheld"] == []
    assert {e["id"] for e in mine["audit_entries"]} < {e["id"] for e in theirs["audit_entries"]}
    # Each export is itself audited, about the person: in the platform chain, and in the
    # chain of every tenant whose content it carried.
    exports = sorted(
        json.dumps([e["chain"], without_request_id(e["details"])], sort_keys=True)
        for e in theirs["audit_entries"]
        if e["action"] == "privacy.export"
    )
    hr_chain = f"tenant:{mine['memberships'][0]['tenant_id']}"
    assert exports == sorted(
        json.dumps(entry, sort_keys=True)
        for entry in (
            ["global", {"self": True, "tenants_withheld": 0}],
            [hr_chain, {"self": True}],
            ["global", {"self": False, "tenants_withheld": 1}],
        )
    )


async def test_export_shows_public_ids_only(
    api: Api, client: httpx.AsyncClient, person: Person
) -> None:
    await api.member("hr", "admin", "admin")  # an admin of hr reads hr's part of it
    export = await _export(client, await api.admin())
    ids = _ids(export)
    assert any(path.endswith("document_id") for path, _ in ids)
    for path, value in ids:
        if path.endswith(".details.request_id"):
            continue  # a request's correlation token (app/kit/request_context.py), not a key
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                continue
            assert isinstance(item, str), f"{path} is {item!r}, not a public id"
            assert PUBLIC_ID.match(item), f"{path} is {item!r}, not a public id"
            key_of(item)
    user_entries = [e for e in export["audit_entries"] if e["target_type"] == "user"]
    assert {e["target_id"] for e in user_entries} == {export["account"]["id"]}
    assert {e["chain"] for e in export["audit_entries"]} <= {
        "global",
        f"tenant:{export['memberships'][0]['tenant_id']}",
    }


async def test_who_may_export(api: Api, client: httpx.AsyncClient, person: Person) -> None:
    url = "/api/v1/privacy/export"
    assert_error(await client.get(url, params={"username": USERNAME}), 401)
    # A colleague may not, and cannot tell an existing username from a missing one.
    other = await client.get(url, params={"username": USERNAME}, headers=person.colleague)
    missing = await client.get(url, params={"username": "nobody-here"}, headers=person.colleague)
    assert_error(other, 403, "forbidden")
    assert without_request_id(other.json()) == without_request_id(missing.json())
    # Everything about a person needs a password sign-in, not an API key.
    by_key = {"Authorization": f"Bearer {person.api_key}"}
    assert_error(
        await client.get(url, params={"username": USERNAME}, headers=by_key),
        403,
        "interactive_sign_in_required",
    )
    assert_error(
        await client.get(url, params={"username": "nobody-here"}, headers=await api.admin()),
        404,
        "not_found",
    )
    assert_error(
        await client.get(url, params={"username": "x" * 65}, headers=await api.admin()), 422
    )
    assert_error(await client.get(url, headers=await api.admin()), 422)


async def _leftovers(app: FastAPI, needles: list[str]) -> list[str]:
    """Where any needle still occurs: on SQLite the database files as bytes, on PostgreSQL
    every row of every table as text."""
    url = app.state.settings.resolved_database_url
    found: list[str] = []
    if app.state.database.is_sqlite:
        database = Path(str(make_url(url).database))
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            if path.exists():
                content = path.read_bytes()
                found += [f"{path.name}: {n}" for n in needles if n.encode() in content]
        return found
    async with app.state.database.read_sessionmaker() as session:
        tables = await session.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        )
        for table in list(tables):
            for needle in needles:
                hits = await session.scalar(
                    text(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE :n'),
                    {"n": f"%{needle}%"},
                )
                if hits:
                    found.append(f"{table}: {needle}")
    return found


async def test_erasure_leaves_no_trace_and_keeps_the_audit_log_verifiable(
    app: FastAPI, api: Api, client: httpx.AsyncClient, person: Person
) -> None:
    admin = await api.admin()
    before = await _export(client, person.headers)
    assert before["chat_sessions"]
    assert before["documents"]
    user_id = key_of(before["account"]["id"])
    assert await _leftovers(app, [USERNAME, EMAIL])

    response = await client.post(
        "/api/v1/privacy/erase", json={"username": USERNAME}, headers=admin
    )
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt["subject_type"] == "user"
    assert receipt["status"] == "done"
    assert receipt["verification"]["passed"] is True
    assert receipt["name_digest"]
    assert USERNAME not in response.text
    assert receipt["receipt_hash"]
    assert receipt["removed"]["users"] == 1
    assert receipt["removed"]["chat_sessions"] == 1
    assert receipt["removed"]["chat_messages"] == 2
    assert receipt["removed"]["api_keys"] == 1
    assert receipt["removed"]["memberships"] == 1
    assert receipt["removed"]["documents_unlinked"] == 1
    assert receipt["removed"]["audit_entries_pseudonymised"] >= 4

    # No credential works any more.
    login = await client.post(
        "/api/v1/auth/token", data={"username": USERNAME, "password": PASSWORD}
    )
    assert_error(login, 401)
    assert_error(await client.get("/api/v1/users/me", headers=person.headers), 401)
    by_key = {"Authorization": f"Bearer {person.api_key}"}
    assert_error(await client.get("/api/v1/users/me", headers=by_key), 401)
    # The upload stays with the tenant, without its uploader.
    kept = await client.get(
        f"/api/v1/tenants/hr/documents/{person.document_id}", headers=person.colleague
    )
    assert kept.status_code == 200, kept.text
    async with app.state.database.read_sessionmaker() as session:
        document = await session.get(Document, key_of(person.document_id))
        assert document is not None
        assert document.uploaded_by is None
        assert await session.get(User, user_id) is None
        for model in (ChatSession, ChatMessage, APIKey):
            assert await session.scalar(select(func.count()).select_from(model)) == 0
        # Entries keep the commitment; the readable actor is gone everywhere.
        commitment = actor_commitment(TEST_AUDIT_SECRET, user_id, USERNAME)
        theirs = list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.actor_commitment == commitment)
            )
        )
        assert len(theirs) == receipt["removed"]["audit_entries_pseudonymised"]
        assert all(e.actor_id is None and e.actor_name is None for e in theirs)
        entries = list(await session.scalars(select(AuditEntry)))
        assert all(e.actor_name != USERNAME and USERNAME not in e.details for e in entries)
        assert all(EMAIL not in e.details for e in entries)
        [erased] = [e for e in entries if e.action == "user.erase"]
        assert erased.chain == "global"
        assert receipt["receipt_hash"] in erased.details
        report = await audit_service.verify(session, checkpoints=CheckpointLog(app.state.settings))
        assert report.ok, report.first_bad
    verified = await client.get("/api/v1/audit/verify", headers=admin)
    assert verified.status_code == 200
    assert verified.json()["ok"] is True
    listing = await client.get("/api/v1/tenants/hr/audit?limit=200", headers=person.colleague)
    assert listing.status_code == 200
    assert USERNAME not in listing.text
    assert EMAIL not in listing.text
    actors = {e["actor"] for e in listing.json()["items"]}
    assert f"erased:{commitment[:12]}" in actors
    # Nowhere in the database, its write-ahead log or shared memory.
    assert await _leftovers(app, [USERNAME, EMAIL]) == []
    assert_error(
        await client.post("/api/v1/privacy/erase", json={"username": USERNAME}, headers=admin),
        404,
    )


async def test_who_may_erase(
    app: FastAPI, api: Api, client: httpx.AsyncClient, person: Person
) -> None:
    url = "/api/v1/privacy/erase"
    body = {"username": USERNAME}
    assert_error(await client.post(url, json=body), 401)
    assert_error(await client.post(url, json=body, headers=person.colleague), 403, "forbidden")
    assert_error(await client.post(url, json=body, headers=person.headers), 403, "forbidden")
    admin = await api.admin()
    assert_error(await client.post(url, json={"username": "nobody-here"}, headers=admin), 404)
    assert_error(await client.post(url, json={"username": "x" * 65}, headers=admin), 422)
    # The last platform admin cannot erase themself.
    assert_error(
        await client.post(url, json={"username": "admin"}, headers=admin),
        409,
        "last_platform_admin",
    )
    created = await client.post(
        "/api/v1/users",
        json={
            "username": "second-admin",
            "password": "second-admin-pass",
            "is_platform_admin": True,
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    second = await api.headers("second-admin", "second-admin-pass")
    key = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=second)
    by_key = {"Authorization": f"Bearer {key.json()['key']}"}
    assert_error(
        await client.post(url, json=body, headers=by_key), 403, "interactive_sign_in_required"
    )
    # With another platform admin left, one may erase themself; the entry of the erasure
    # does not name them either.
    erased = await client.post(url, json={"username": "second-admin"}, headers=second)
    assert erased.status_code == 200, erased.text
    assert_error(await client.get("/api/v1/users/me", headers=second), 401)
    verified = await client.get("/api/v1/audit/verify", headers=admin)
    assert verified.json()["ok"] is True
    async with app.state.database.read_sessionmaker() as session:
        names = set(await session.scalars(select(AuditEntry.actor_name)))
    assert "second-admin" not in names


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_cli_export_and_erase(
    app: FastAPI, person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import cli

    monkeypatch.setattr(cli, "get_settings", lambda: app.state.settings)
    runner = CliRunner()
    exported = in_thread(runner.invoke, cli.app, ["privacy", "export", USERNAME])
    assert exported.exit_code == 0, exported.output
    export = json.loads(exported.output)
    assert export["account"]["email"] == EMAIL
    assert [s["id"] for s in export["chat_sessions"]] == [person.session_id]
    assert [d["id"] for d in export["documents"]] == [person.document_id]

    erased = in_thread(runner.invoke, cli.app, ["privacy", "erase", USERNAME, "--yes"])
    assert erased.exit_code == 0, erased.output
    receipt = json.loads(erased.output)
    assert receipt["status"] == "done"
    assert receipt["verification"]["passed"] is True
    missing = in_thread(runner.invoke, cli.app, ["privacy", "erase", USERNAME, "--yes"])
    assert missing.exit_code == 1
    assert "not found" in missing.output.lower()
    async with app.state.database.read_sessionmaker() as session:
        report = await audit_service.verify(session, checkpoints=CheckpointLog(app.state.settings))
    assert report.ok, report.first_bad
    assert await _leftovers(app, [USERNAME, EMAIL]) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_failed_verification_rolls_the_erasure_back(
    app: FastAPI,
    api: Api,
    client: httpx.AsyncClient,
    person: Person,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.privacy.repository import privacy_repository

    async def still_there(*_: Any) -> list[str]:
        return ["users"]

    monkeypatch.setattr(privacy_repository, "identity_matches", still_there)
    response = await client.post(
        "/api/v1/privacy/erase", json={"username": USERNAME}, headers=await api.admin()
    )
    assert_error(response, 500, "erasure_unverified")
    assert "found in users" in response.json()["error"]["message"]
    # Nothing was removed, and no receipt claims otherwise.
    assert (await client.get("/api/v1/users/me", headers=person.headers)).status_code == 200
    async with app.state.database.read_sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(DeletionReceipt)) == 0
        assert await session.scalar(select(func.count()).select_from(ChatSession)) == 1
