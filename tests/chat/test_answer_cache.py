"""The chat-answer cache (issue 14 §3) over documents ingested for real, on SQLite and
PostgreSQL, with the memory and the Redis backend. The generator is the counting echo double:
`world.echo.calls` says whether an answer was generated or served from the cache, and its
answers (its whole prompt) show which documents an answer was written from."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from app.kit.settings import Settings
from app.main import create_app
from app.models import AuditEntry, Document
from tests.chat.conftest import World
from tests.conftest import REDIS_URL, TEST_SECRET, Api, assert_error, make_settings, require_service
from tests.helpers import key_of

CHAT = "/api/v1/tenants/{t}/chat"
VACATION = "How many days of paid vacation does every employee receive per year?"
VACATION_TEXT = "twenty five days of paid vacation"
MIXED = (
    "How many vacation days do employees get, and how often is the production database "
    "password rotated by the platform team?"
)
ENG_TEXT = "rotated every ninety days"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Any) -> Settings:
    """The app's settings with the answer cache in memory or in Redis. The echo double's answer
    is its prompt, which these tests read as it is: the faithfulness check is off, as in
    tests/chat/conftest.py (the echo once passed only because its prompt reads as a refusal,
    which used to be shown verbatim)."""
    chat = {"unsupported_answer": "off"}
    if request.param == "memory":
        return make_settings(database_url, tmp_path / "data", chat=chat)
    require_service("Redis", REDIS_URL, 6379)
    return make_settings(
        database_url,
        tmp_path / "data",
        chat=chat,
        redis_url=REDIS_URL,
        # Keys of their own: other runs on the same Redis hold the same tenant ids.
        jwt_secret=TEST_SECRET + uuid.uuid4().hex,
        cache={"key_prefix": f"cairn-test-{uuid.uuid4().hex}"},
    )


async def ask(
    client: httpx.AsyncClient, headers: dict[str, str], question: str, slug: str = "hr"
) -> dict[str, Any]:
    response = await client.post(CHAT.format(t=slug), json={"question": question}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def ask_streamed(
    client: httpx.AsyncClient, headers: dict[str, str], question: str, slug: str = "hr"
) -> tuple[str, dict[str, Any]]:
    """The streamed deltas joined, and the `done` event's response."""
    response = await client.post(
        CHAT.format(t=slug), json={"question": question, "stream": True}, headers=headers
    )
    assert response.status_code == 200, response.text
    deltas: list[str] = []
    done: dict[str, Any] = {}
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        lines = block.split("\n")
        event = next((line[6:].strip() for line in lines if line.startswith("event:")), "")
        data = "\n".join(line[5:].lstrip() for line in lines if line.startswith("data:"))
        if event == "delta":
            deltas.append(json.loads(data)["text"])
        elif event == "done":
            done = json.loads(data)
    assert done, response.text
    return "".join(deltas), done


async def chat_audits(app: FastAPI) -> list[dict[str, Any]]:
    async with app.state.database.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.action == "chat.ask").order_by(AuditEntry.id)
        )
        return [json.loads(e.details) for e in rows]


def lookups(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "cairn_cache_lookups_total", {"cache": "answer", "result": result}
    )
    return value or 0.0


async def test_the_second_ask_is_served_from_the_cache_on_every_api(
    client: httpx.AsyncClient, world: World, app: FastAPI
) -> None:
    viewer = world.users["viewer"]
    first = await ask(client, viewer, VACATION)
    assert VACATION_TEXT in first["answer"]
    assert world.echo.calls == 1
    hits = lookups("hit")

    again = await ask(
        client, viewer, "  How many days of paid vacation does every employee receive per   year?"
    )
    assert world.echo.calls == 1, "the generator ran again"
    assert lookups("hit") == hits + 1
    assert again["answer"] == first["answer"]
    assert again["citations"] == first["citations"]
    # Kept as a turn like any answer (a session of its own), and audited as served cached.
    assert again["session_id"] != first["session_id"]
    stored = await client.get(
        f"/api/v1/tenants/hr/chat/sessions/{again['session_id']}", headers=viewer
    )
    messages = stored.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == first["answer"]
    assert [a["cached"] for a in await chat_audits(app)] == [False, True]

    # A streaming client gets the cached answer too.
    text, done = await ask_streamed(client, viewer, VACATION)
    assert world.echo.calls == 1
    assert text == first["answer"]
    assert done["answer"] == first["answer"]
    assert done["citations"] == first["citations"]

    # So does an OpenAI-compatible client asking the same (no history, no instructions).
    completion = await client.post(
        "/v1/chat/completions",
        json={"model": "cairn:hr", "messages": [{"role": "user", "content": VACATION}]},
        headers=viewer,
    )
    assert completion.status_code == 200, completion.text
    assert world.echo.calls == 1
    assert completion.json()["choices"][0]["message"]["content"].startswith(first["answer"])

    # Another question, or the same in an ongoing conversation, is answered anew.
    await ask(client, viewer, "Who issues parking permits for the staff garage?")
    assert world.echo.calls == 2
    followed = await client.post(
        CHAT.format(t="hr"),
        json={"question": VACATION, "session_id": first["session_id"]},
        headers=viewer,
    )
    assert followed.status_code == 200, followed.text
    assert world.echo.calls == 3


async def test_a_soft_deleted_source_is_never_served_from_the_cache(
    client: httpx.AsyncClient, world: World
) -> None:
    viewer, editor = world.users["viewer"], world.users["editor"]
    assert VACATION_TEXT in (await ask(client, viewer, VACATION))["answer"]
    deleted = await client.delete(
        f"/api/v1/tenants/hr/documents/{world.docs['vacation']}", headers=editor
    )
    assert deleted.status_code == 202, deleted.text

    after = await ask(client, viewer, VACATION)
    assert world.echo.calls == 2
    assert VACATION_TEXT not in after["answer"]
    assert world.docs["vacation"] not in {c["document_id"] for c in after["citations"]}
    # Restoring it makes the answer written without it unreachable in turn.
    restored = await client.post(
        f"/api/v1/tenants/hr/documents/{world.docs['vacation']}/restore", headers=editor
    )
    assert restored.status_code == 200, restored.text
    assert VACATION_TEXT in (await ask(client, viewer, VACATION))["answer"]
    assert world.echo.calls == 3


async def test_a_raised_sensitivity_is_never_served_from_the_cache(
    client: httpx.AsyncClient, world: World
) -> None:
    restricted, editor = world.users["restricted"], world.users["editor"]
    assert VACATION_TEXT in (await ask(client, restricted, VACATION))["answer"]
    assert world.echo.calls == 1
    raised = await client.patch(
        f"/api/v1/tenants/hr/documents/{world.docs['vacation']}",
        json={"sensitivity": "confidential"},
        headers=editor,
    )
    assert raised.status_code == 200, raised.text

    after = await ask(client, restricted, VACATION)
    assert world.echo.calls == 2
    assert VACATION_TEXT not in after["answer"]


async def test_a_removed_member_never_gets_the_cached_answer_again(
    client: httpx.AsyncClient, world: World, api: Api
) -> None:
    viewer = world.users["viewer"]
    first = await ask(client, viewer, VACATION)
    removed = await client.delete("/api/v1/tenants/hr/members/vi", headers=await api.admin())
    assert removed.status_code == 204, removed.text
    refused = await client.post(CHAT.format(t="hr"), json={"question": VACATION}, headers=viewer)
    assert_error(refused, 404)
    # Back with the same role, hence the same visibility: the membership changes moved the
    # tenant's content version, so the answer is made again rather than found.
    await api.member("hr", "vi", "viewer")
    again = await ask(client, viewer, VACATION)
    assert world.echo.calls == 2
    assert again["answer"] == first["answer"]


async def test_tenant_b_never_gets_tenant_a_cached_answer(
    client: httpx.AsyncClient, world: World
) -> None:
    both, eng = world.users["both"], world.users["eng"]
    in_hr = await ask(client, both, MIXED, "hr")
    assert VACATION_TEXT in in_hr["answer"]
    assert ENG_TEXT not in in_hr["answer"]
    # The same person, the same question, the same sensitivity levels, another tenant.
    in_eng = await ask(client, both, MIXED, "eng")
    assert world.echo.calls == 2
    assert ENG_TEXT in in_eng["answer"]
    assert VACATION_TEXT not in in_eng["answer"]
    # Within eng the entry is shared by callers who see the same documents.
    from_eng_admin = await ask(client, eng, MIXED, "eng")
    assert world.echo.calls == 2
    assert from_eng_admin["answer"] == in_eng["answer"]


async def test_every_hit_is_checked_against_what_its_sources_are_now(
    client: httpx.AsyncClient, world: World, app: FastAPI
) -> None:
    """Defence in depth: a change that failed to move the content version (here a row edited
    behind the services' back) still cannot surface a cached answer from a hidden document."""
    viewer = world.users["viewer"]
    assert VACATION_TEXT in (await ask(client, viewer, VACATION))["answer"]
    stale = lookups("stale")
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            update(Document)
            .where(Document.id == key_of(world.docs["vacation"]))
            .values(deleted_at=Document.created_at)
        )
    calls = world.echo.calls
    after = await ask(client, viewer, VACATION)
    assert lookups("stale") == stale + 1
    assert world.echo.calls == calls + 1
    assert VACATION_TEXT not in after["answer"]


async def test_a_purge_removes_and_counts_the_cached_answers(
    client: httpx.AsyncClient, world: World, api: Api
) -> None:
    admin = await api.user("hradmin", hr="admin")
    viewer = world.users["viewer"]
    await ask(client, viewer, VACATION)
    await ask(client, admin, VACATION)  # same visibility as the viewer's: the same entry
    parking = await ask(client, viewer, "Who issues parking permits for the staff garage?")
    assert world.echo.calls == 2
    # The echo's answer is its prompt: whether the vacation passage was in the parking one.
    parking_held = VACATION_TEXT in parking["answer"]
    accepted = await client.delete(
        f"/api/v1/tenants/hr/documents/{world.docs['vacation']}?purge=true", headers=admin
    )
    assert accepted.status_code == 202, accepted.text
    receipt_id = accepted.json()["receipt_id"]
    receipt: dict[str, Any] = {}
    for _ in range(600):  # two minutes: the purge job shares two cores with everything else
        response = await client.get(
            f"/api/v1/tenants/hr/deletion-receipts/{receipt_id}", headers=admin
        )
        receipt = response.json()
        if receipt["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.2)
    assert receipt["status"] == "done", receipt
    assert receipt["removed"]["cache_entries"] == 1 + int(parking_held)
    (check,) = [c for c in receipt["verification"]["checks"] if c["name"] == "answer_cache"]
    assert check["passed"] is True
    after = await ask(client, viewer, VACATION)
    assert VACATION_TEXT not in after["answer"]


async def test_a_change_made_through_another_process_reaches_this_ones_cache(
    client: httpx.AsyncClient, world: World, settings: Settings
) -> None:
    """Each API process may keep its own memory cache: a membership change made through
    another one still makes this one's entries unreachable, through the content version in
    the shared database."""
    viewer = world.users["viewer"]
    await ask(client, viewer, VACATION)
    other = create_app(settings.model_copy(update={"embedded_workers": False}))
    async with (
        other.router.lifespan_context(other),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=other), base_url="http://cairn.test"
        ) as second,
    ):
        other_api = Api(second)
        await other_api.member("hr", "vi", "restricted_viewer")
        await other_api.member("hr", "vi", "viewer")
    await ask(client, viewer, VACATION)
    assert world.echo.calls == 2
