"""Issue 11, finding 5: ids never come from a counter shared across tenants. The API shows
opaque public ids (app/kit/public_ids.py); nothing of tenant A can be counted from B's ids."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.kit.public_ids import IdKind, PublicIds
from tests.conftest import Api, assert_error
from tests.documents.helpers import wait_for

PUBLIC_ID = re.compile(r"^(ten|usr|doc|chk|ses|msg|key|aud)_[0-9a-f]{32}$")


def test_ids_round_trip_and_refuse_other_kinds_and_forgeries() -> None:
    codec = PublicIds("one secret " * 4)
    ids = [codec.encode(IdKind.DOCUMENT, n) for n in range(1, 200)]
    assert [codec.decode(IdKind.DOCUMENT, i) for i in ids] == list(range(1, 200))
    assert len(set(ids)) == len(ids)
    # Consecutive keys give unordered, unrelated ids.
    assert ids != sorted(ids)
    first = ids[0]
    assert codec.decode(IdKind.CHUNK, "chk_" + first[4:]) is None
    assert codec.decode(IdKind.DOCUMENT, first[:-1] + ("0" if first[-1] != "0" else "1")) is None
    assert codec.decode(IdKind.DOCUMENT, "doc_1") is None
    assert codec.decode(IdKind.DOCUMENT, "doc_" + "z" * 32) is None
    # Another deployment's key cannot read them.
    assert PublicIds("another secret " * 3).decode(IdKind.DOCUMENT, first) is None
    with pytest.raises(ValueError, match="not a database key"):
        codec.encode(IdKind.DOCUMENT, 2**63)


def _ids_in(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (field, value) whose field names an id, anywhere in a JSON body."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if (k == "id" or k.endswith("_id") or k.endswith("_ids")) and k != "request_id":
                items = v if isinstance(v, list) else [v]
                found.extend((k, item) for item in items if item is not None)
            found.extend(_ids_in(v, k))
    elif isinstance(value, list):
        for item in value:
            found.extend(_ids_in(item, key))
    return found


async def test_no_response_carries_a_counter(
    client: httpx.AsyncClient, api: Api, app: FastAPI
) -> None:
    """Walk the responses a tenant member sees (documents, search, chat sessions, audit, keys,
    tenants, the user) and require every id in them to be a public id."""
    from app.generation.provider import GeneratorProvider
    from tests.chat.doubles import EchoGenerator, limited

    app.state.generator = GeneratorProvider(app.state.settings, limited(EchoGenerator()))
    await api.tenant("a")
    await api.tenant("b")
    admin = await api.user("boss", b="admin")
    other = await api.user("aadmin", a="admin")
    for n in range(3):
        # Tenant A's activity between B's uploads must not show in B's ids.
        response = await client.post(
            "/api/v1/tenants/a/documents",
            files={"file": (f"a{n}.txt", f"Tenant a memo number {n}.".encode())},
            headers=other,
        )
        assert response.status_code == 202
    uploaded = []
    for n in range(2):
        response = await client.post(
            "/api/v1/tenants/b/documents",
            files={"file": (f"b{n}.txt", f"Parking permits are issued at desk {n}.".encode())},
            headers=admin,
        )
        assert response.status_code == 202, response.text
        uploaded.append(response.json()["id"])
    for doc_id in uploaded:
        assert (await wait_for(client, admin, "b", doc_id))["status"] == "ready"
    key = (await client.post("/api/v1/api-keys", json={"name": "k"}, headers=admin)).json()
    chat = await client.post(
        "/api/v1/tenants/b/chat", json={"question": "Who issues parking permits?"}, headers=admin
    )
    assert chat.status_code == 200, chat.text
    session_id = chat.json()["session_id"]
    bodies = [
        key,
        chat.json(),
        (await client.get("/api/v1/tenants/b/documents", headers=admin)).json(),
        (await client.get(f"/api/v1/tenants/b/documents/{uploaded[0]}", headers=admin)).json(),
        (
            await client.post(
                "/api/v1/tenants/b/search",
                json={"query": "parking permits", "filters": {"document_ids": uploaded}},
                headers=admin,
            )
        ).json(),
        (await client.get("/api/v1/tenants/b/chat/sessions", headers=admin)).json(),
        (await client.get(f"/api/v1/tenants/b/chat/sessions/{session_id}", headers=admin)).json(),
        (await client.get("/api/v1/tenants/b/audit", headers=admin)).json(),
        (await client.get("/api/v1/api-keys", headers=admin)).json(),
        (await client.get("/api/v1/tenants", headers=admin)).json(),
        (await client.get("/api/v1/users/me", headers=admin)).json(),
    ]
    seen = [pair for body in bodies for pair in _ids_in(body)]
    kinds = {field for field, _ in seen}
    assert {"id", "document_id", "chunk_id", "session_id", "target_id"} <= kinds, kinds
    assert any(field == "document_ids" for field, _ in seen)
    for field, value in seen:
        assert isinstance(value, str), (field, value)
        assert PUBLIC_ID.match(value), (field, value)


async def test_integers_are_not_ids(client: httpx.AsyncClient, api: Api) -> None:
    await api.tenant("b")
    admin = await api.user("boss", b="admin")
    for path in ("/api/v1/tenants/b/documents/1", "/api/v1/tenants/b/chat/sessions/1"):
        assert_error(await client.get(path, headers=admin), 422)
    assert_error(await client.get(f"/api/v1/tenants/b/documents/{2**64}", headers=admin), 422)
    search = await client.post(
        "/api/v1/tenants/b/search",
        json={"query": "x", "filters": {"document_ids": [1, 10**30]}},
        headers=admin,
    )
    assert_error(search, 422)
    chat = await client.post(
        "/api/v1/tenants/b/chat", json={"question": "x", "session_id": 10**30}, headers=admin
    )
    assert_error(chat, 422)
    # A well-formed id of another kind is not a document id either.
    sessions = "/api/v1/tenants/b/documents/ses_" + "0" * 32
    assert_error(await client.get(sessions, headers=admin), 422)
