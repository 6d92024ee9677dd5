from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from app.chat.answers import Caller, answer_service
from app.chat.endpoints import CurrentAnswerRuntime
from app.kit.auth import CurrentPrincipal
from app.kit.authz import CurrentEnforcer
from app.kit.db import ReadSession, Session
from app.kit.disconnect import cancel_on_disconnect
from app.openai_compat.adapter import (
    CompletionHeader,
    completion,
    completion_chunks,
    question_of,
)
from app.openai_compat.schemas import ChatCompletion, ChatCompletionRequest, ModelList
from app.openai_compat.service import model_service

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "stream: true"}
}


@router.get("/models", response_model=ModelList)
async def list_models(
    principal: CurrentPrincipal, session: ReadSession, enforcer: CurrentEnforcer
) -> ModelList:
    """`cairn:<tenant-slug>` for every tenant you may chat in."""
    return await model_service.models(session, principal, enforcer)


@router.post("/chat/completions", response_model=ChatCompletion, responses=STREAM_RESPONSE)
async def chat_completions(
    data: ChatCompletionRequest,
    request: Request,
    principal: CurrentPrincipal,
    session: ReadSession,
    write: Session,
    enforcer: CurrentEnforcer,
    runtime: CurrentAnswerRuntime,
) -> ChatCompletion | EventSourceResponse:
    """A grounded answer from the model's tenant, with numbered sources in the text and a
    `citations` field; `stream: true` sends `chat.completion.chunk` events and `[DONE]`."""
    access = await model_service.access(session, principal, enforcer, model=data.model)
    question = question_of(data)
    caller = Caller.of(access, via="openai")
    prepared = await answer_service.prepare(session, caller, question=question, runtime=runtime)
    header = CompletionHeader.new(data.model)
    if data.stream:
        return EventSourceResponse(completion_chunks(prepared, header), ping=15)
    answered = await cancel_on_disconnect(
        request, lambda cancel: answer_service.answer(write, prepared, cancel=cancel)
    )
    return completion(answered, header)
