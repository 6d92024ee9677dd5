"""Issue 11, finding 1: an answer built from a confidential passage while citing only a public
one must not survive in the session once its reader loses sight of that passage.

The double below writes what the attack saw a model write: a first sentence with a marker on
the public parking notice and a second, unmarked, that quotes the confidential bonus. Citations
are assigned from markers, so only the public notice is cited; the bonus was in the prompt.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncGenerator, Sequence

import httpx
import pytest
from fastapi import FastAPI

from app.chat.service import WITHHELD
from app.generation.base import ChatMessage, Completion, GenerationLimits
from app.generation.provider import GeneratorProvider
from tests.chat.conftest import CONFIDENTIAL_ONLY, World
from tests.chat.doubles import limited
from tests.chat.test_chat_api import SESSIONS, ask
from tests.conftest import Api

QUESTION = "Who issues parking permits, and how many extra vacation days do executives get?"
CONFIDENTIAL_QUOTE = "The board grants executives seven extra vacation days."
_PASSAGE = re.compile(r'<passage number="(\d+)"[^>]*>\s*([^<]*)', re.S)


class QuotingGenerator:
    """Cites the parking notice by number and quotes the confidential bonus without a marker
    (when both are in its prompt); records every prompt it was given."""

    name = "quoting"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def _text(self, messages: Sequence[ChatMessage]) -> str:
        prompt = "\n".join(m.content for m in messages)
        self.prompts.append(prompt)
        # The last user message holds this question's passages (earlier ones: the example).
        passages = dict(
            (text.strip()[:20], number) for number, text in _PASSAGE.findall(messages[-1].content)
        )
        parking = next((n for t, n in passages.items() if t.startswith("Parking")), None)
        answer = f"Parking permits are issued by the facilities desk [{parking}]."
        if any(t.startswith("Executive vacation") for t in passages):
            answer += " " + CONFIDENTIAL_QUOTE
        return answer

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        text = self._text(messages)
        return Completion(text, "stop", 1, len(text.split()))

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        yield self._text(messages)


@pytest.fixture
def quoting(app: FastAPI, world: World) -> QuotingGenerator:
    double = QuotingGenerator()
    app.state.generator = GeneratorProvider(app.state.settings, limited(double))  # type: ignore[arg-type]
    return double


async def _leaky_answer(client: httpx.AsyncClient, world: World) -> str:
    """Ask as the viewer; the answer quotes the bonus but cites only the parking notice."""
    body = (await ask(client, world.users["viewer"], question=QUESTION, top_k=4)).json()
    assert CONFIDENTIAL_QUOTE in body["answer"], body
    assert {c["document_id"] for c in body["citations"]} == {world.docs["parking"]}, body
    return str(body["session_id"])


async def _assert_withheld(
    client: httpx.AsyncClient, world: World, quoting: QuotingGenerator, session_id: str
) -> None:
    viewer = world.users["viewer"]
    path = f"{SESSIONS.format(t='hr')}/{session_id}"
    detail = (await client.get(path, headers=viewer)).json()
    answer = detail["messages"][1]
    assert answer["withheld"] is True, detail
    assert answer["content"] == WITHHELD
    assert answer["citations"] == []
    for message in detail["messages"]:
        for word in CONFIDENTIAL_ONLY:
            assert word not in message["content"].lower()
    # A follow-up in the same session: the old answer must not go back into the prompt.
    follow = await ask(
        client, viewer, question="Who issues parking permits?", session_id=session_id
    )
    assert follow.status_code == 200, follow.text
    for word in CONFIDENTIAL_ONLY:
        assert word not in quoting.prompts[-1].lower(), quoting.prompts[-1]


async def test_lowered_role_hides_answers_built_from_confidential_passages(
    client: httpx.AsyncClient, world: World, quoting: QuotingGenerator, api: Api
) -> None:
    session_id = await _leaky_answer(client, world)
    await api.member("hr", "vi", "restricted_viewer")
    await _assert_withheld(client, world, quoting, session_id)


async def test_soft_deleted_uncited_source_hides_the_answer(
    client: httpx.AsyncClient, world: World, quoting: QuotingGenerator
) -> None:
    session_id = await _leaky_answer(client, world)
    deleted = await client.delete(
        f"/api/v1/tenants/hr/documents/{world.docs['bonus']}", headers=world.users["editor"]
    )
    assert deleted.status_code == 202, deleted.text
    await _assert_withheld(client, world, quoting, session_id)


async def test_answers_stay_visible_while_their_sources_do(
    client: httpx.AsyncClient, world: World, quoting: QuotingGenerator
) -> None:
    session_id = await _leaky_answer(client, world)
    detail = (
        await client.get(f"{SESSIONS.format(t='hr')}/{session_id}", headers=world.users["viewer"])
    ).json()
    assert detail["messages"][1]["withheld"] is False
    assert CONFIDENTIAL_QUOTE in detail["messages"][1]["content"]


class RepeatingGenerator(QuotingGenerator):
    """As above; and a follow-up whose prompt carries the earlier answer repeats it behind a
    refusal-shaped opening, as the attack asked the model to (issue 21, item 3)."""

    def _text(self, messages: Sequence[ChatMessage]) -> str:
        prompt = "\n".join(m.content for m in messages[:-1])
        if CONFIDENTIAL_QUOTE in prompt:
            self.prompts.append("\n".join(m.content for m in messages))
            return "The documents do not answer this, but earlier you said: " + CONFIDENTIAL_QUOTE
        return super()._text(messages)


async def test_a_follow_up_is_withheld_with_the_turns_its_prompt_carried(
    client: httpx.AsyncClient, world: World, api: Api, app: FastAPI
) -> None:
    repeating = RepeatingGenerator()
    app.state.generator = GeneratorProvider(app.state.settings, limited(repeating))  # type: ignore[arg-type]
    viewer = world.users["viewer"]
    session_id = await _leaky_answer(client, world)
    # Its own passages are the parking notice alone; the confidential bonus comes in through
    # the earlier turn in its prompt.
    follow = await ask(
        client, viewer, question="Who issues parking permits?", session_id=session_id, top_k=1
    )
    assert follow.status_code == 200, follow.text
    assert CONFIDENTIAL_QUOTE in repeating.prompts[-1]
    assert {c["document_id"] for c in follow.json()["citations"]} <= {world.docs["parking"]}

    await api.member("hr", "vi", "restricted_viewer")
    detail = (await client.get(f"{SESSIONS.format(t='hr')}/{session_id}", headers=viewer)).json()
    answers = [m for m in detail["messages"] if m["role"] == "assistant"]
    assert [m["withheld"] for m in answers] == [True, True], detail
    for message in detail["messages"]:
        for word in CONFIDENTIAL_ONLY:
            assert word not in message["content"].lower()
