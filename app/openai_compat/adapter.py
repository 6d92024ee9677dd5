"""OpenAI's chat-completions format over the answer service. A request is read into a stateless
`Question` (the client sends the conversation every time); the answer goes back as a
`chat.completion` or as `chat.completion.chunk` events and `[DONE]`, its text ending with the
check's note, the numbered sources with their supporting quotes, and `citations`, `state` and
`check` fields alongside.

A client of this API cannot show states, so a streamed answer sends only checked text: the
role at once, then nothing (the stream's keep-alive comments) while the model writes and its
text is checked, then the checked answer, its note (a quoted or unverified answer says so in
words) and its sources as content, then a last chunk with the extension fields."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sse_starlette import ServerSentEvent

from app.chat.adapter import citation_out
from app.chat.answers import Answered, Prepared, Progress, Question, answer_service
from app.chat.citations import sources_block
from app.chat.language import SOURCES_HEADING
from app.chat.prompt import Turn
from app.chat.schemas import CheckOutcome, CitationOut
from app.chat.states import AnswerState
from app.kit.errors import BadRequest, CairnError, error_body
from app.openai_compat.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Usage,
    chunk,
)


def question_of(data: ChatCompletionRequest) -> Question:
    """The question (the last user message), the earlier turns and the client's instructions;
    400 for what Cairn does not answer."""
    if data.n not in (None, 1):
        raise BadRequest("Only n = 1 is supported")
    if any(m.has_non_text() for m in data.messages):
        raise BadRequest("Only text content is supported")
    last = data.messages[-1]
    if last.role != "user" or not last.text().strip():
        raise BadRequest("The last message must be a non-empty user message")
    instructions = "\n".join(
        m.text() for m in data.messages if m.role in ("system", "developer") and m.text()
    )
    dialogue = [m for m in data.messages[:-1] if m.role in ("user", "assistant")]
    history = [
        Turn(asked.text(), answered.text())
        for asked, answered in zip(dialogue, dialogue[1:], strict=False)
        if asked.role == "user" and answered.role == "assistant"
    ]
    return Question(
        last.text().strip(),
        top_k=data.top_k,
        max_new_tokens=data.max_completion_tokens or data.max_tokens,
        temperature=data.temperature,
        top_p=data.top_p,
        history=history,
        instructions=instructions or None,
    )


@dataclass(frozen=True)
class CompletionHeader:
    """What every chunk of one completion repeats."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> CompletionHeader:
        return cls("chatcmpl-" + secrets.token_hex(12), int(time.time()), model)

    def event(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        citations: list[CitationOut] | None = None,
        state: AnswerState | None = None,
        check: CheckOutcome | None = None,
    ) -> ServerSentEvent:
        body = chunk(
            self.id, self.created, self.model, delta, finish_reason, citations, state, check
        )
        return ServerSentEvent(json.dumps(body, ensure_ascii=False))


def _sources(answered: Answered) -> str:
    answer = answered.answer
    return sources_block(answer.citations, SOURCES_HEADING[answered.language], shown=answer.text)


def _note(answered: Answered) -> str:
    """The check's note under the answer text (a plain-text client has nowhere else)."""
    note = answered.answer.note
    return f"\n\n{note}" if note else ""


def completion(answered: Answered, header: CompletionHeader) -> ChatCompletion:
    answer = answered.answer
    return ChatCompletion(
        id=header.id,
        created=header.created,
        model=header.model,
        choices=[
            Choice(
                message=AssistantMessage(
                    content=answer.text + _note(answered) + _sources(answered)
                ),
                finish_reason="length" if answer.finish_reason == "length" else "stop",
            )
        ],
        usage=Usage(
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            total_tokens=answer.prompt_tokens + answer.completion_tokens,
        ),
        citations=[citation_out(c) for c in answer.citations],
        state=answer.state,
        check=answer.check,
    )


async def completion_chunks(
    prepared: Prepared, header: CompletionHeader
) -> AsyncIterator[ServerSentEvent]:
    """The role, the text, the sources as a last text delta, a final chunk with `citations`,
    then `[DONE]`; or SPEC.md's error body. Closing this stops the generation."""
    try:
        async with answer_service.stream(prepared) as items:
            yield header.event({"role": "assistant", "content": ""})
            async for item in items:
                if isinstance(item, Progress):
                    continue
                if isinstance(item, str):
                    yield header.event({"content": item})
                    continue
                ending = _note(item) + _sources(item)
                if ending:
                    yield header.event({"content": ending})
                citations = [citation_out(c) for c in item.answer.citations]
                yield header.event(
                    {},
                    finish_reason="stop",
                    citations=citations,
                    state=item.answer.state,
                    check=item.answer.check,
                )
        yield ServerSentEvent("[DONE]")
    except CairnError as exc:
        yield ServerSentEvent(json.dumps(error_body(exc.code, exc.message)))
