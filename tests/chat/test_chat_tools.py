"""Chat tools over the API: rename, delete for good and search your conversations; rate an
answer (thumbs up or down, an optional comment) and the tenant admin's list of rated answers;
the rated answers exported as a question set that `cairn eval answers` runs on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.chat.service import WITHHELD
from app.evaluation.answers import load_gold
from app.evaluation.beir import load_beir
from app.kit.public_ids import IdKind
from app.models import (
    AnswerFeedback,
    AuditEntry,
    ChatCitation,
    ChatMessage,
    ChatMessageSource,
    ChatSession,
)
from tests.chat.conftest import World
from tests.conftest import Api, assert_error, in_thread
from tests.helpers import key_of, public_of

CHAT = "/api/v1/tenants/{t}/chat"
SESSIONS = "/api/v1/tenants/{t}/chat/sessions"
FEEDBACK = "/api/v1/tenants/{t}/chat/messages/{m}/feedback"
RATED = "/api/v1/tenants/{t}/feedback"
VACATION = "How many days of paid vacation does every employee receive per year?"
PARKING = "Who issues parking permits for the staff garage?"
SECRET_COMMENT = "Missed the executive bonus entirely, says Ada Lovelace"


async def ask(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post(CHAT.format(t="hr"), json=body, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def rows(app: FastAPI, model: Any, *where: Any) -> int:
    async with app.state.database.read_sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def actions(app: FastAPI, action: str) -> list[AuditEntry]:
    async with app.state.database.read_sessionmaker() as session:
        found = await session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        )
        return list(found.all())


async def test_rename_search_and_delete_own_sessions(
    client: httpx.AsyncClient, world: World, app: FastAPI
) -> None:
    viewer = world.users["viewer"]
    first = await ask(client, viewer, question=VACATION)
    second = await ask(client, viewer, question=PARKING)
    assert first["message_id"].startswith("msg_")
    hr = SESSIONS.format(t="hr")

    renamed = await client.patch(
        f"{hr}/{first['session_id']}", json={"title": "  Leave   days "}, headers=viewer
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "Leave days"
    assert renamed.json()["message_count"] == 2
    [entry] = await actions(app, "chat_session.rename")
    assert "Leave" not in (entry.details or "")

    async def found(q: str, headers: dict[str, str] = viewer) -> list[str]:
        response = await client.get(hr, params={"q": q}, headers=headers)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["items"]]

    # By the new title, by a question's words, in any case; LIKE wildcards are plain text.
    assert await found("leave") == [first["session_id"]]
    assert await found("PARKING PERMITS") == [second["session_id"]]
    assert await found("paid vacation") == [first["session_id"]]
    assert await found("%") == []
    assert set(await found("")) == {first["session_id"], second["session_id"]}
    # Nobody else's sessions match, in this tenant or another.
    assert await found("leave", world.users["restricted"]) == []
    both = world.users["both"]
    await client.post(CHAT.format(t="eng"), json={"question": VACATION}, headers=both)
    assert await found("vacation", both) == []

    session_key = key_of(first["session_id"])
    # The question and the answer.
    message_keys = await _messages(app, session_key)
    assert len(message_keys) == 2
    rated = await client.put(
        FEEDBACK.format(t="hr", m=first["message_id"]), json={"rating": "up"}, headers=viewer
    )
    assert rated.status_code == 200, rated.text
    deleted = await client.delete(f"{hr}/{first['session_id']}", headers=viewer)
    assert deleted.status_code == 204
    # Gone for good: the session, its messages, citations, sources and feedback.
    assert await rows(app, ChatSession, ChatSession.id == session_key) == 0
    assert await rows(app, ChatMessage, ChatMessage.session_id == session_key) == 0
    for table in (ChatCitation, ChatMessageSource, AnswerFeedback):
        assert await rows(app, table, table.message_id.in_(message_keys)) == 0
    [entry] = await actions(app, "chat_session.delete")
    assert entry.target_type == "chat_session"
    assert int(entry.target_id or 0) == session_key
    assert_error(await client.get(f"{hr}/{first['session_id']}", headers=viewer), 404)
    assert await found("") == [second["session_id"]]


async def _messages(app: FastAPI, session_key: int) -> list[int]:
    async with app.state.database.read_sessionmaker() as session:
        found = await session.scalars(
            select(ChatMessage.id).where(ChatMessage.session_id == session_key)
        )
        return [int(i) for i in found]


async def test_only_the_owner_renames_deletes_or_rates(
    client: httpx.AsyncClient, world: World, api: Api
) -> None:
    viewer = world.users["viewer"]
    answer = await ask(client, viewer, question=VACATION)
    session_path = f"{SESSIONS.format(t='hr')}/{answer['session_id']}"
    feedback = FEEDBACK.format(t="hr", m=answer["message_id"])
    hr_admin = await api.user("boss", hr="admin")
    for other in (world.users["restricted"], world.users["editor"], hr_admin):
        assert_error(await client.patch(session_path, json={"title": "x"}, headers=other), 404)
        assert_error(await client.delete(session_path, headers=other), 404)
        assert_error(await client.put(feedback, json={"rating": "down"}, headers=other), 404)
        assert_error(await client.delete(feedback, headers=other), 404)
    # The owner, through another tenant, does not reach it either.
    both = world.users["both"]
    mine = await ask(client, both, question=VACATION)
    eng_session = f"{SESSIONS.format(t='eng')}/{mine['session_id']}"
    assert_error(await client.patch(eng_session, json={"title": "x"}, headers=both), 404)
    assert_error(await client.delete(eng_session, headers=both), 404)
    eng_feedback = FEEDBACK.format(t="eng", m=mine["message_id"])
    assert_error(await client.put(eng_feedback, json={"rating": "up"}, headers=both), 404)
    # A question is no answer to rate.
    question_id = public_of(IdKind.CHAT_MESSAGE, key_of(answer["message_id"]) - 1)
    question = FEEDBACK.format(t="hr", m=question_id)
    assert_error(await client.put(question, json={"rating": "up"}, headers=viewer), 404)
    # Guests and auditors may not chat: 403, as for asking.
    for role in ("guest", "auditor"):
        assert_error(
            await client.put(feedback, json={"rating": "up"}, headers=world.users[role]), 403
        )
    # Anonymous.
    assert_error(await client.patch(session_path, json={"title": "x"}), 401)
    assert_error(await client.put(feedback, json={"rating": "up"}), 401)
    assert_error(await client.get(RATED.format(t="hr")), 401)
    # Still the owner's, unchanged.
    detail = (await client.get(session_path, headers=viewer)).json()
    assert detail["title"].startswith("How many days")
    assert detail["messages"][1]["feedback"] is None


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "session", {"title": ""}),
        ("PATCH", "session", {"title": "   "}),
        ("PATCH", "session", {"title": "x" * 201}),
        ("PATCH", "session", {"title": "x", "owner": "me"}),
        ("PUT", "feedback", {"rating": "meh"}),
        ("PUT", "feedback", {"rating": "up", "comment": "x" * 2001}),
        ("PUT", "feedback", {}),
        ("GET", "search", None),
        ("GET", "rated", None),
        ("PUT", "bad-id", {"rating": "up"}),
    ],
)
async def test_bounds(
    client: httpx.AsyncClient,
    world: World,
    api: Api,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    viewer = world.users["viewer"]
    answer = await ask(client, viewer, question=VACATION)
    admin = await api.user("boss", hr="admin")
    url, headers = {
        "session": (f"{SESSIONS.format(t='hr')}/{answer['session_id']}", viewer),
        "feedback": (FEEDBACK.format(t="hr", m=answer["message_id"]), viewer),
        "search": (f"{SESSIONS.format(t='hr')}?q={'x' * 201}", viewer),
        "rated": (f"{RATED.format(t='hr')}?rating=meh", admin),
        "bad-id": (FEEDBACK.format(t="hr", m=answer["session_id"]), viewer),
    }[path]
    response = await client.request(method, url, json=body, headers=headers)
    assert_error(response, 422)


async def test_feedback_is_stored_replaced_removed_and_audited_without_words(
    client: httpx.AsyncClient, world: World, app: FastAPI, api: Api
) -> None:
    viewer = world.users["viewer"]
    answer = await ask(client, viewer, question=VACATION)
    feedback = FEEDBACK.format(t="hr", m=answer["message_id"])
    up = await client.put(feedback, json={"rating": "up"}, headers=viewer)
    assert up.status_code == 200, up.text
    assert (up.json()["rating"], up.json()["comment"]) == ("up", None)
    down = await client.put(
        feedback, json={"rating": "down", "comment": SECRET_COMMENT}, headers=viewer
    )
    assert (down.json()["rating"], down.json()["comment"]) == ("down", SECRET_COMMENT)
    assert await rows(app, AnswerFeedback) == 1
    session_path = f"{SESSIONS.format(t='hr')}/{answer['session_id']}"
    detail = (await client.get(session_path, headers=viewer)).json()
    assert detail["messages"][1]["id"] == answer["message_id"]
    assert detail["messages"][1]["feedback"]["rating"] == "down"
    assert detail["messages"][1]["feedback"]["comment"] == SECRET_COMMENT
    assert detail["messages"][0]["feedback"] is None
    # The asker's own data: in their privacy export too.
    exported = await client.get("/api/v1/privacy/export", params={"username": "vi"}, headers=viewer)
    assert exported.status_code == 200, exported.text
    [history] = exported.json()["chat_sessions"]
    assert history["messages"][1]["feedback"]["comment"] == SECRET_COMMENT

    # The tenant admin reads it, with question, answer, check and passages.
    admin = await api.user("boss", hr="admin")
    listed = await client.get(RATED.format(t="hr"), headers=admin)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert item["message_id"] == answer["message_id"]
    assert item["question"] == VACATION
    assert item["answer"] == answer["answer"]
    assert (item["rating"], item["comment"]) == ("down", SECRET_COMMENT)
    assert item["check"] == answer["check"]
    assert item["state"] == answer["state"]
    assert item["withheld"] is False
    assert [p["document_id"] for p in item["passages"]] == [
        c["document_id"] for c in answer["citations"]
    ]
    assert {"title", "quote", "snippet"} <= set(item["passages"][0])
    assert (await client.get(f"{RATED.format(t='hr')}?rating=up", headers=admin)).json()[
        "total"
    ] == 0
    assert (await client.get(f"{RATED.format(t='hr')}?rating=down", headers=admin)).json()[
        "total"
    ] == 1
    # Nobody but a tenant admin: a viewer, an editor or an auditor gets 403; another
    # tenant's admin sees none of hr (404 for hr, nothing in eng).
    for role in ("viewer", "editor", "auditor"):
        assert_error(await client.get(RATED.format(t="hr"), headers=world.users[role]), 403)
    eng_admin = world.users["eng"]
    assert_error(await client.get(RATED.format(t="hr"), headers=eng_admin), 404)
    assert (await client.get(RATED.format(t="eng"), headers=eng_admin)).json()["total"] == 0

    removed = await client.delete(feedback, headers=viewer)
    assert removed.status_code == 204
    assert await rows(app, AnswerFeedback) == 0
    assert (await client.delete(feedback, headers=viewer)).status_code == 204
    assert (await client.get(RATED.format(t="hr"), headers=admin)).json()["total"] == 0

    entries = await actions(app, "answer.feedback")
    assert [json.loads(e.details or "{}")["rating"] for e in entries] == ["up", "down"]
    assert json.loads(entries[1].details or "{}")["comment_chars"] == len(SECRET_COMMENT)
    assert len(await actions(app, "answer.feedback_delete")) == 1
    async with app.state.database.read_sessionmaker() as session:
        everything = (await session.scalars(select(AuditEntry))).all()
    dumped = json.dumps([(e.details, e.target_id) for e in everything])
    assert "Lovelace" not in dumped
    assert "executive bonus" not in dumped


async def test_a_deleted_source_withholds_the_rated_answer_from_the_admin(
    client: httpx.AsyncClient, world: World, api: Api
) -> None:
    viewer = world.users["viewer"]
    answer = await ask(client, viewer, question=VACATION)
    await client.put(
        FEEDBACK.format(t="hr", m=answer["message_id"]), json={"rating": "up"}, headers=viewer
    )
    for document_id in {c["document_id"] for c in answer["citations"]}:
        deleted = await client.delete(
            f"/api/v1/tenants/hr/documents/{document_id}", headers=world.users["editor"]
        )
        assert deleted.status_code in (200, 202, 204), deleted.text
    admin = await api.user("boss", hr="admin")
    [item] = (await client.get(RATED.format(t="hr"), headers=admin)).json()["items"]
    assert item["withheld"] is True
    assert item["answer"] == WITHHELD
    assert item["passages"] == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_rated_answers_become_a_question_set_that_eval_answers_runs(
    client: httpx.AsyncClient,
    world: World,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_deepseek_v3: Path,
) -> None:
    viewer = world.users["viewer"]
    good = await ask(client, viewer, question=VACATION)
    bad = await ask(client, viewer, question=PARKING)
    assert good["citations"]
    for answer, rating in ((good, "up"), (bad, "down")):
        response = await client.put(
            FEEDBACK.format(t="hr", m=answer["message_id"]),
            json={"rating": rating, "comment": "fine" if rating == "up" else "wrong desk"},
            headers=viewer,
        )
        assert response.status_code == 200, response.text

    from app import cli
    from app.feedback import cli as feedback_cli

    settings = app.state.settings
    monkeypatch.setattr(feedback_cli, "get_settings", lambda: settings)
    out = tmp_path / "golden"
    exported = in_thread(
        CliRunner().invoke, cli.app, ["feedback", "export", "hr", "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    assert "2 questions (1 with a reference answer" in exported.output
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert [(q["_id"], q["rating"]) for q in queries] == [
        (good["message_id"], "up"),
        (bad["message_id"], "down"),
    ]
    # Only the thumbs-up question is judged and has gold spans: the approved answer first.
    dataset = load_beir(out)
    gold = load_gold(out)
    assert list(dataset.queries) == [good["message_id"]]
    assert dataset.queries[good["message_id"]] == VACATION
    assert set(dataset.qrels[good["message_id"]]) == {
        public_of(IdKind.CHUNK, key_of(c["chunk_id"])) for c in good["citations"]
    }
    assert gold[good["message_id"]][0].startswith(good["answer"].split()[0])
    [entry] = await actions(app, "answer.feedback_export")
    assert entry.target_type == "tenant"

    # `cairn eval answers` runs on it, with a tiny model standing in for the configured one.
    generator = settings.generator.model_copy(
        update={"model_path": str(tiny_deepseek_v3), "max_new_tokens": 8}
    )
    evaluated = settings.model_copy(update={"generator": generator})
    configured = Mock(return_value=evaluated)  # with the cache_clear the command calls
    monkeypatch.setattr("app.kit.settings.get_settings", configured)
    result = in_thread(
        CliRunner().invoke,
        cli.app,
        ["eval", "answers", str(out), "--tenant", "golden", "--log-dir", str(tmp_path / "logs")],
    )
    assert result.exit_code == 0, result.output
    assert "| configured | 1 |" in result.output
