"""POST /api/v1/tenants/{t}/chat and the session endpoints, over documents ingested for real,
on SQLite and PostgreSQL. The generator is the echo double (see doubles.py): its answer is its
prompt, so these tests see exactly what reached the model."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.chat.language import NOTHING_FOUND
from app.chat.prompt import PREAMBLE
from app.chat.service import WITHHELD
from app.kit.public_ids import IdKind
from app.models import AuditEntry
from tests.chat.conftest import CONFIDENTIAL_ONLY, DOCS, ENG_ONLY, World
from tests.conftest import Api, assert_error
from tests.helpers import key_of, public_of

CHAT = "/api/v1/tenants/{t}/chat"
SESSIONS = "/api/v1/tenants/{t}/chat/sessions"
VACATION_QUESTION = "How many days of paid vacation does every employee receive per year?"
# Relevant to hr's vacation document and, by its words, to eng's rotation document.
MIXED_QUESTION = (
    "How many vacation days do employees get, and how often is the production database "
    "password rotated by the platform team?"
)


async def ask(
    client: httpx.AsyncClient, headers: dict[str, str], slug: str = "hr", **body: Any
) -> httpx.Response:
    return await client.post(CHAT.format(t=slug), json=body, headers=headers)


def assert_no_text(answer: str, words: tuple[str, ...]) -> None:
    lowered = answer.lower()
    for word in words:
        assert word not in lowered, f"{word!r} reached the answer:\n{answer}"


async def test_answer_cites_the_passages_it_was_given(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await ask(client, world.users["viewer"], question=VACATION_QUESTION)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "answer",
        "citations",
        "session_id",
        "message_id",
        "finish_reason",
        "grounded",
        "check",
        "state",
        "note",
    }
    assert body["grounded"] is True
    assert "twenty five days of paid vacation" in body["answer"]
    # The prompt fences the passages as data and asks for the question's language.
    assert "<passages>" in body["answer"]
    assert "Answer in English." in body["answer"]
    cited = {c["document_id"] for c in body["citations"]}
    assert world.docs["vacation"] in cited
    hr_docs = {world.docs[n] for n, d in DOCS.items() if d[0] == "hr"}
    assert cited <= hr_docs
    for citation in body["citations"]:
        assert set(citation) == {
            "ref",
            "document_id",
            "chunk_id",
            "title",
            "snippet",
            "quote",
            "highlight",
        }
        assert citation["snippet"]
    assert world.echo.calls == 1


async def test_a_chinese_question_asks_for_a_chinese_answer(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await ask(client, world.users["viewer"], question="每位员工每年有多少天带薪年假？")
    body = response.json()
    assert body["grounded"] is True, body
    assert "请用简体中文回答" in body["answer"]
    assert world.docs["nianjia"] in {c["document_id"] for c in body["citations"]}


async def test_nothing_relevant_is_said_without_the_model(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await ask(
        client, world.users["viewer"], question="Who won the football world cup in 1998?"
    )
    body = response.json()
    assert response.status_code == 200, body
    assert body["grounded"] is False
    assert body["answer"] == NOTHING_FOUND["en"]
    assert body["citations"] == []
    assert world.echo.calls == 0
    chinese = (await ask(client, world.users["viewer"], question="法国的首都是哪里？")).json()
    assert chinese["answer"] == NOTHING_FOUND["zh"]


async def test_hr_viewer_never_gets_eng_text(client: httpx.AsyncClient, world: World) -> None:
    viewer = world.users["viewer"]
    body = (await ask(client, viewer, question=MIXED_QUESTION)).json()
    assert body["grounded"] is True
    assert_no_text(body["answer"], ENG_ONLY)
    assert world.docs["rotation"] not in {c["document_id"] for c in body["citations"]}
    for c in body["citations"]:
        assert_no_text(c["snippet"] + c["title"], ENG_ONLY)
    # The same question in eng, by someone with a role there: the echo does reveal eng text,
    # so the absence above is meaningful.
    both = (await ask(client, world.users["both"], "eng", question=MIXED_QUESTION)).json()
    assert "ninety days" in both["answer"]
    assert world.docs["rotation"] in {c["document_id"] for c in both["citations"]}
    # And asked in hr, the user with roles in both tenants gets only hr.
    both_hr = (await ask(client, world.users["both"], "hr", question=MIXED_QUESTION)).json()
    assert_no_text(both_hr["answer"], ENG_ONLY)
    # eng itself does not exist for the hr viewer.
    assert_error(await ask(client, viewer, "eng", question=MIXED_QUESTION), 404)


async def test_hr_viewer_never_reads_an_eng_session(
    client: httpx.AsyncClient, world: World
) -> None:
    eng_answer = (await ask(client, world.users["both"], "eng", question=MIXED_QUESTION)).json()
    eng_session = eng_answer["session_id"]
    viewer = world.users["viewer"]
    for path in (f"{SESSIONS}/{eng_session}",):
        assert_error(await client.get(path.format(t="hr"), headers=viewer), 404)
        assert_error(await client.get(path.format(t="eng"), headers=viewer), 404)
        assert_error(await client.delete(path.format(t="hr"), headers=viewer), 404)
    # Continuing someone else's session (or one of another tenant) is refused, not merged.
    assert_error(await ask(client, viewer, question=VACATION_QUESTION, session_id=eng_session), 404)
    # The owner cannot reach it through the other tenant either.
    assert_error(
        await client.get(f"{SESSIONS.format(t='hr')}/{eng_session}", headers=world.users["both"]),
        404,
    )
    listed = (await client.get(SESSIONS.format(t="hr"), headers=world.users["both"])).json()
    assert listed["total"] == 0
    assert listed["items"] == []


async def test_sensitivity_applies_to_chat(client: httpx.AsyncClient, world: World) -> None:
    question = "How many extra vacation days do executives get from the board?"
    viewer = (await ask(client, world.users["viewer"], question=question)).json()
    assert world.docs["bonus"] in {c["document_id"] for c in viewer["citations"]}
    restricted = (await ask(client, world.users["restricted"], question=question)).json()
    assert_no_text(restricted["answer"], CONFIDENTIAL_ONLY)
    assert world.docs["bonus"] not in {c["document_id"] for c in restricted["citations"]}
    # Guests may search but not chat; auditors read no content.
    assert_error(await ask(client, world.users["guest"], question=question), 403)
    assert_error(await ask(client, world.users["auditor"], question=question), 403)


async def test_sessions_keep_history_per_owner(client: httpx.AsyncClient, world: World) -> None:
    viewer = world.users["viewer"]
    first = (await ask(client, viewer, question=VACATION_QUESTION)).json()
    session_id = first["session_id"]
    second = (
        await ask(client, viewer, question="Who issues parking permits?", session_id=session_id)
    ).json()
    assert second["session_id"] == session_id
    # The earlier turn went into the prompt as history, before the new passages.
    prompt = world.echo.prompts[-1][PREAMBLE:]
    assert [m.role for m in prompt] == ["user", "assistant", "user"]
    assert prompt[0].content == VACATION_QUESTION

    listed = (await client.get(SESSIONS.format(t="hr"), headers=viewer)).json()
    assert listed["total"] == 1
    (summary,) = listed["items"]
    assert summary["id"] == session_id
    assert summary["message_count"] == 4
    assert summary["title"].startswith("How many days of paid vacation")

    detail = (await client.get(f"{SESSIONS.format(t='hr')}/{session_id}", headers=viewer)).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 2
    assert detail["messages"][1]["citations"] == first["citations"]
    # An answer keeps what the check made of it (here: not checked); a question has none.
    checks = [(m["grounded"], m["check"], m["note"]) for m in detail["messages"][:2]]
    assert checks == [(None, None, None), (first["grounded"], first["check"], first["note"])]
    # Another hr member sees none of it.
    other = world.users["restricted"]
    assert (await client.get(SESSIONS.format(t="hr"), headers=other)).json()["total"] == 0
    assert_error(await client.get(f"{SESSIONS.format(t='hr')}/{session_id}", headers=other), 404)

    deleted = await client.delete(f"{SESSIONS.format(t='hr')}/{session_id}", headers=viewer)
    assert deleted.status_code == 204
    assert_error(await client.get(f"{SESSIONS.format(t='hr')}/{session_id}", headers=viewer), 404)


async def test_history_is_bounded_by_configuration(
    client: httpx.AsyncClient, world: World, app: FastAPI
) -> None:
    turns = app.state.settings.chat.history_turns
    # The echo's answers are whole prompts, so its history outgrows the prompt's token budget
    # (tests/chat/test_prompt_budget.py); here only the configured turn count may bound it.
    settings = app.state.settings
    roomy = {"max_prompt_tokens": 1_000_000, "context_length": 2_000_000}
    app.state.settings = settings.model_copy(
        update={"generator": settings.generator.model_copy(update=roomy)}
    )
    viewer = world.users["viewer"]
    session_id = None
    for _ in range(turns + 2):
        body = (await ask(client, viewer, question=VACATION_QUESTION, session_id=session_id)).json()
        session_id = body["session_id"]
    prompt = world.echo.prompts[-1]
    # rules and example + `turns` (question, answer) pairs + the new question.
    assert len(prompt) == PREAMBLE + 2 * turns + 1


async def test_a_soft_deleted_source_hides_old_answers(
    client: httpx.AsyncClient, world: World
) -> None:
    viewer = world.users["viewer"]
    first = (await ask(client, viewer, question=VACATION_QUESTION)).json()
    assert world.docs["vacation"] in {c["document_id"] for c in first["citations"]}
    session_id = first["session_id"]
    deleted = await client.delete(
        f"/api/v1/tenants/hr/documents/{world.docs['vacation']}", headers=world.users["editor"]
    )
    assert deleted.status_code == 202, deleted.text

    detail = (await client.get(f"{SESSIONS.format(t='hr')}/{session_id}", headers=viewer)).json()
    answer = detail["messages"][1]
    assert answer["withheld"] is True
    assert answer["content"] == WITHHELD
    assert answer["citations"] == []
    assert (answer["grounded"], answer["check"], answer["note"]) == (None, None, None)
    # Nor does the old answer go back into the model with the next question.
    await ask(client, viewer, question="Who issues parking permits?", session_id=session_id)
    prompt_text = "\n".join(m.content for m in world.echo.prompts[-1])
    assert "twenty five days of paid vacation" not in prompt_text


async def test_streaming_sends_deltas_then_the_answer(
    client: httpx.AsyncClient, world: World
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    async with client.stream(
        "POST",
        CHAT.format(t="hr"),
        json={"question": VACATION_QUESTION, "stream": True},
        headers=world.users["viewer"],
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = "message"
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line.split(":", 1)[1])))
    kinds = [kind for kind, _ in events]
    # How far the model has got, never its words; then the checked answer and `done`.
    assert kinds[-2:] == ["delta", "done"]
    assert set(kinds[:-2]) == {"progress"}
    writing = [data for kind, data in events if kind == "progress"]
    assert [p["stage"] for p in writing][-1] == "checking"
    assert [p["tokens"] for p in writing[:-1]] == list(range(1, len(writing)))
    text = events[-2][1]["text"]
    done = events[-1][1]
    assert done["answer"] == text
    # This world's check is off: the model's words, labelled as not verified.
    assert (done["check"], done["state"]) == ("unchecked", "unverified")
    assert world.docs["vacation"] in {c["document_id"] for c in done["citations"]}
    listed = (await client.get(SESSIONS.format(t="hr"), headers=world.users["viewer"])).json()
    assert [s["id"] for s in listed["items"]] == [done["session_id"]]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"question": ""}, 422),
        ({"question": "   "}, 422),
        ({"question": "x" * 4001}, 422),
        ({"question": "vacation?", "top_k": 0}, 422),
        ({"question": "vacation?", "top_k": 21}, 422),
        ({"question": "vacation?", "session_id": 999999}, 422),
        ({"question": "vacation?", "session_id": "ses_" + "0" * 32}, 422),
        ({"question": "vacation?", "session_id": public_of(IdKind.CHAT_SESSION, 999999)}, 404),
        ({"question": "vacation?", "unknown": 1}, 422),
        ({}, 422),
    ],
)
async def test_bad_requests_get_clear_errors(
    client: httpx.AsyncClient, world: World, body: dict[str, Any], status: int
) -> None:
    response = await client.post(CHAT.format(t="hr"), json=body, headers=world.users["viewer"])
    assert_error(response, status)


async def test_no_credentials(client: httpx.AsyncClient, world: World) -> None:
    assert_error(await client.post(CHAT.format(t="hr"), json={"question": "x"}), 401)
    assert_error(await client.get(SESSIONS.format(t="hr")), 401)


async def test_audit_names_documents_never_words(
    client: httpx.AsyncClient, world: World, app: FastAPI
) -> None:
    body = (await ask(client, world.users["viewer"], question=VACATION_QUESTION)).json()
    async with app.state.database.read_sessionmaker() as session:
        entries = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "chat.ask"))
        ).all()
    assert len(entries) == 1
    details = json.loads(entries[0].details)
    assert details["via"] == "chat"
    assert key_of(world.docs["vacation"]) in details["cited_document_ids"]
    dumped = json.dumps(details)
    assert "vacation" not in dumped.lower()
    assert "twenty" not in dumped.lower()
    assert key_of(body["session_id"]) == int(entries[0].target_id)


async def test_a_tenant_without_documents(
    client: httpx.AsyncClient, world: World, api: Api
) -> None:
    await api.tenant("empty")
    await api.member("empty", "vi", "viewer")
    response = await ask(client, world.users["viewer"], "empty", question=VACATION_QUESTION)
    assert response.status_code == 200, response.text
    assert response.json()["grounded"] is False
    assert response.json()["answer"] == NOTHING_FOUND["en"]
