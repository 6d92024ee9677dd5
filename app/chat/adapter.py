"""Cairn's chat API over the answer service: a `ChatRequest` read into a `Question` that keeps
its turn in a session, and the answer written back as a `ChatResponse` or as Server-Sent
Events: `progress` {stage: "writing" | "checking", tokens} while the model writes and its text
is checked (none of its words: they are shown only once checked); then `delta` {text} with the
checked answer; then `done` with the response (its `state`, `check` and `note`), or `error`
with SPEC.md's error body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import cast, get_args

from sse_starlette import ServerSentEvent

from app.chat.answers import (
    Answered,
    Prepared,
    Progress,
    Question,
    StoredSession,
    answer_service,
)
from app.chat.citations import Citation
from app.chat.repository import stored_highlight
from app.chat.schemas import (
    ChatRequest,
    ChatResponse,
    CheckOutcome,
    CitationOut,
    FeedbackOut,
    MessageOut,
    Rating,
)
from app.chat.service import WITHHELD, TranscriptEntry
from app.chat.states import state_of
from app.kit.errors import CairnError, error_body
from app.models import AnswerFeedback, ChatCitation


def question_of(data: ChatRequest) -> Question:
    """The request as the answer service's question."""
    return Question(
        data.question,
        top_k=data.top_k,
        max_new_tokens=data.max_new_tokens,
        stored=StoredSession(data.session_id),
    )


def citation_out(c: Citation | ChatCitation) -> CitationOut:
    return CitationOut(
        ref=c.ref,
        document_id=c.document_id,
        chunk_id=c.chunk_id,
        title=c.title,
        snippet=c.snippet,
        quote=c.quote,
        highlight=stored_highlight(c) if isinstance(c, ChatCitation) else list(c.highlight),
    )


_OUTCOMES = frozenset(get_args(CheckOutcome))


def stored_outcome(stored: str | None) -> CheckOutcome | None:
    # A value this version does not know (written by a later one) reads as not recorded.
    return cast(CheckOutcome, stored) if stored in _OUTCOMES else None


def feedback_out(feedback: AnswerFeedback | None) -> FeedbackOut | None:
    if feedback is None:
        return None
    return FeedbackOut(
        rating=cast(Rating, feedback.rating),
        comment=feedback.comment,
        updated_at=feedback.updated_at,
    )


def message_out(entry: TranscriptEntry, feedback: AnswerFeedback | None = None) -> MessageOut:
    """A stored message as its session is read: a withheld answer shows the notice instead of
    its text, and neither its citations nor what the check made of it."""
    message = entry.stored.message
    shown = entry.role == "assistant" and not entry.withheld
    return MessageOut(
        id=message.id,
        role="assistant" if entry.role == "assistant" else "user",
        content=WITHHELD if entry.withheld else entry.content,
        created_at=message.created_at,
        citations=[citation_out(c) for c in entry.stored.citations] if shown else [],
        withheld=entry.withheld,
        grounded=message.grounded if shown else None,
        check=stored_outcome(message.check_outcome) if shown else None,
        state=state_of(message.check_outcome, message.grounded) if shown else None,
        note=message.note if shown else None,
        feedback=feedback_out(feedback) if entry.role == "assistant" else None,
    )


def chat_response(answered: Answered) -> ChatResponse:
    answer = answered.answer
    return ChatResponse(
        answer=answer.text,
        citations=[citation_out(c) for c in answer.citations],
        session_id=answered.session_id,
        message_id=answered.message_id,
        finish_reason="length" if answer.finish_reason == "length" else "stop",
        grounded=answer.grounded,
        check=answer.check,
        state=answer.state,
        note=answer.note,
    )


async def chat_events(prepared: Prepared) -> AsyncIterator[ServerSentEvent]:
    """The streamed answer as events; closing this stops the generation."""
    try:
        async with answer_service.stream(prepared) as items:
            async for item in items:
                if isinstance(item, Answered):
                    yield ServerSentEvent(chat_response(item).model_dump_json(), event="done")
                elif isinstance(item, Progress):
                    body = {"stage": item.stage, "tokens": item.tokens}
                    yield ServerSentEvent(json.dumps(body), event="progress")
                else:
                    text = json.dumps({"text": item}, ensure_ascii=False)
                    yield ServerSentEvent(text, event="delta")
    except CairnError as exc:
        yield ServerSentEvent(json.dumps(error_body(exc.code, exc.message)), event="error")
