"""GET /v1/models and POST /v1/chat/completions through the real `openai` client over a real
socket: a tiny DeepSeek model (random weights, transformers, int8) generates the answers, and
the echo double shows what reached the prompt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from app.chat.language import NOTHING_FOUND
from app.chat.prompt import PREAMBLE
from tests.chat.doubles import EchoGenerator, limited
from tests.chat.served import Served, serve
from tests.conftest import make_settings
from tests.helpers import without_request_id

VACATION = "How many days of paid vacation does every employee receive per year?"
MIXED = (
    "How many vacation days do employees get, and how often is the production database "
    "password rotated by the platform team?"
)
ENG_ONLY = ("ninety", "rotation week", "nobody takes", "credentials")


@pytest.fixture
async def served(
    database_url: str, tmp_path: Path, tiny_deepseek_v3: Path
) -> AsyncIterator[Served]:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        generator={
            "model_path": str(tiny_deepseek_v3),
            "quantization": "int8",
            "max_new_tokens": 16,
        },
        # The echo double answers with its prompt, which the check would replace (its rules
        # even read as a refusal); test_faithfulness.py runs the check through this API.
        chat={"unsupported_answer": "off"},
    )
    async with serve(settings) as live:
        yield live


def client_for(served: Served, user: str = "viewer", key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{served.url}/v1", api_key=key or served.keys[user], max_retries=0
    )


async def test_models_are_the_tenants_you_may_chat_in(served: Served) -> None:
    assert [m.id for m in (await client_for(served).models.list()).data] == ["cairn:hr"]
    both = await client_for(served, "both").models.list()
    assert sorted(m.id for m in both.data) == ["cairn:eng", "cairn:hr"]
    # A guest may search hr but not chat there: no model.
    assert [m.id for m in (await client_for(served, "guest").models.list()).data] == []


async def test_a_completion_from_the_deepseek_model(served: Served) -> None:
    response = await client_for(served).chat.completions.create(
        model="cairn:hr", messages=[{"role": "user", "content": VACATION}]
    )
    assert response.object == "chat.completion"
    assert response.model == "cairn:hr"
    (choice,) = response.choices
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert 1 <= response.usage.completion_tokens <= 16
    assert isinstance((response.model_extra or {})["citations"], list)


async def test_streaming_from_the_deepseek_model(served: Served) -> None:
    stream = await client_for(served).chat.completions.create(
        model="cairn:hr", messages=[{"role": "user", "content": VACATION}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert isinstance((chunks[-1].model_extra or {})["citations"], list)


@pytest.mark.parametrize("stream", [False, True])
async def test_citations_are_numbered_in_the_text_and_listed(served: Served, stream: bool) -> None:
    echo = EchoGenerator()
    served.use(limited(echo))
    client = client_for(served)
    messages = [{"role": "user", "content": MIXED}]
    if stream:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="cairn:hr", messages=messages, stream=True
            )
        ]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        citations = (chunks[-1].model_extra or {})["citations"]
    else:
        response = await client.chat.completions.create(model="cairn:hr", messages=messages)
        text = response.choices[0].message.content or ""
        citations = (response.model_extra or {})["citations"]
    assert "\n\nSources:\n[" in text
    assert citations
    for c in citations:
        assert f"[{c['ref']}] {c['title']}" in text
    assert {c["document_id"] for c in citations} == {served.docs["vacation"]}
    for word in ENG_ONLY:
        assert word not in text.lower()


async def test_the_clients_conversation_is_the_history(served: Served) -> None:
    echo = EchoGenerator()
    served.use(limited(echo))
    await client_for(served).chat.completions.create(
        model="cairn:hr",
        messages=[
            {"role": "system", "content": "Reply like a pirate."},
            {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": "I am Cairn."},
            {"role": "user", "content": [{"type": "text", "text": VACATION}]},
        ],
    )
    (prompt,) = echo.prompts
    assert [m.role for m in prompt[PREAMBLE:]] == ["user", "assistant", "user"]
    assert "Reply like a pirate." in prompt[0].content
    assert prompt[0].content.index("Rules:") < prompt[0].content.index("pirate")
    assert (prompt[PREAMBLE].content, prompt[PREAMBLE + 1].content) == (
        "Who are you?",
        "I am Cairn.",
    )


async def test_oversized_conversations_are_cut_not_refused(served: Served) -> None:
    echo = EchoGenerator()
    served.use(limited(echo))
    huge = "blah " * 40_000
    response = await client_for(served).chat.completions.create(
        model="cairn:hr",
        messages=[
            {"role": "system", "content": huge},
            {"role": "user", "content": huge},
            {"role": "assistant", "content": huge},
            {"role": "user", "content": VACATION},
        ],
    )
    assert response.choices[0].message.content
    (prompt,) = echo.prompts
    cap = served.app.state.settings.chat.max_question_chars
    assert len(prompt[0].content) < 2 * cap
    assert all(len(m.content) <= cap for m in prompt[PREAMBLE:-1])


async def test_nothing_relevant(served: Served) -> None:
    response = await client_for(served).chat.completions.create(
        model="cairn:hr",
        messages=[{"role": "user", "content": "Who won the football world cup in 1998?"}],
    )
    assert response.choices[0].message.content == NOTHING_FOUND["en"]
    assert (response.model_extra or {})["citations"] == []


async def test_another_tenant_is_no_model_at_all(served: Served) -> None:
    client = client_for(served)
    messages = [{"role": "user", "content": MIXED}]
    with pytest.raises(openai.NotFoundError) as eng:
        await client.chat.completions.create(model="cairn:eng", messages=messages)
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="cairn:nope", messages=messages)
    # Same answer for a tenant that exists and one that does not.
    assert without_request_id(eng.value.body) == without_request_id(missing.value.body)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        await client_for(served, key="ck_not-a-real-key").models.list()


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": "hello"}],
        [{"role": "user", "content": "   "}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        [],
    ],
)
async def test_bad_requests(served: Served, messages: list[dict[str, object]]) -> None:
    with pytest.raises((openai.BadRequestError, openai.UnprocessableEntityError)):
        await client_for(served).chat.completions.create(
            model="cairn:hr",
            messages=messages,  # type: ignore[arg-type]
        )


async def test_only_one_choice(served: Served) -> None:
    with pytest.raises(openai.BadRequestError, match="n = 1"):
        await client_for(served).chat.completions.create(
            model="cairn:hr", messages=[{"role": "user", "content": VACATION}], n=2
        )
