"""The one answer service behind both chat APIs: every answer that was started is audited
exactly once (finished, failed or cut off), through either API, and a tenant member without
chat is no model at all."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.generation.provider import GeneratorProvider
from app.models import AuditEntry
from tests.chat.conftest import World
from tests.chat.doubles import StallingGenerator, limited
from tests.chat.test_chat_limits import with_timeout
from tests.conftest import assert_error
from tests.helpers import key_of, without_request_id

CHAT = "/api/v1/tenants/hr/chat"
COMPLETIONS = "/v1/chat/completions"
QUESTION = "How many days of paid vacation does every employee receive per year?"


async def audited(app: FastAPI, count: int) -> list[dict[str, Any]]:
    """The `chat.ask` entries' details, once there are `count` of them (unfinished answers are
    audited detached from their request), and checked to stay at that."""
    for _ in range(200):
        async with app.state.database.read_sessionmaker() as session:
            entries = (
                await session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.action == "chat.ask")
                    .order_by(AuditEntry.id)
                )
            ).all()
        if len(entries) >= count:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    async with app.state.database.read_sessionmaker() as session:
        entries = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "chat.ask").order_by(AuditEntry.id)
            )
        ).all()
    assert len(entries) == count
    return [json.loads(e.details) for e in entries]


async def events(client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: Any) -> str:
    async with client.stream("POST", path, json={**body, "stream": True}, headers=headers) as r:
        assert r.status_code == 200
        return "".join([line async for line in r.aiter_lines()])


async def test_failed_answers_are_audited_once(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    stalling = StallingGenerator()
    app.state.generator = GeneratorProvider(app.state.settings, limited(stalling))
    with_timeout(app, 0.3)
    viewer = world.users["viewer"]
    whole = await client.post(CHAT, json={"question": QUESTION}, headers=viewer)
    assert_error(whole, 504, "generation_timeout")
    streamed = await events(client, CHAT, {"question": QUESTION}, viewer)
    assert "generation_timeout" in streamed
    completion = {"model": "cairn:hr", "messages": [{"role": "user", "content": QUESTION}]}
    assert_error(await client.post(COMPLETIONS, json=completion, headers=viewer), 504)
    assert "generation_timeout" in await events(client, COMPLETIONS, completion, viewer)
    details = await audited(app, 4)
    assert sorted(d["via"] for d in details) == ["chat", "chat", "openai", "openai"]
    assert {d["finish_reason"] for d in details} == {"cancelled"}
    assert all(d["grounded"] and d["cited_document_ids"] == [] for d in details)
    # None of them was kept as history.
    listed = await client.get(f"{CHAT}/sessions", headers=viewer)
    assert listed.json()["total"] == 0


async def test_finished_answers_are_audited_once(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    viewer = world.users["viewer"]
    completion = {"model": "cairn:hr", "messages": [{"role": "user", "content": QUESTION}]}
    assert (await client.post(COMPLETIONS, json=completion, headers=viewer)).status_code == 200
    assert "[DONE]" in await events(client, COMPLETIONS, completion, viewer)
    assert "event: done" in await events(client, CHAT, {"question": QUESTION}, viewer)
    details = await audited(app, 3)
    assert [d["via"] for d in details] == ["openai", "openai", "chat"]
    assert {d["finish_reason"] for d in details} == {"stop"}
    assert all(key_of(world.docs["vacation"]) in d["cited_document_ids"] for d in details)


async def test_a_member_without_chat_is_no_model(client: httpx.AsyncClient, world: World) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    guest = await client.post(
        COMPLETIONS, json={"model": "cairn:hr", "messages": messages}, headers=world.users["guest"]
    )
    missing = await client.post(
        COMPLETIONS,
        json={"model": "cairn:nope", "messages": messages},
        headers=world.users["guest"],
    )
    assert_error(guest, 404, "model_not_found")
    assert without_request_id(guest.json()) == without_request_id(missing.json())
