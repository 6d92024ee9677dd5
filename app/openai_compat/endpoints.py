from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from app.chat.conversation import ChatContext
from app.kit.auth import AppSettings, CurrentPrincipal
from app.kit.authz import CurrentEnforcer
from app.kit.db import ReadSession, Session
from app.openai_compat.schemas import ChatCompletion, ChatCompletionRequest, ModelList
from app.openai_compat.service import openai_service
from app.search.endpoints import CurrentRetriever

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "stream: true"}
}


@router.get("/models", response_model=ModelList)
async def list_models(
    principal: CurrentPrincipal, session: ReadSession, enforcer: CurrentEnforcer
) -> ModelList:
    """`cairn:<tenant-slug>` for every tenant you may chat in."""
    return await openai_service.models(session, principal, enforcer)


@router.post("/chat/completions", response_model=ChatCompletion, responses=STREAM_RESPONSE)
async def chat_completions(
    data: ChatCompletionRequest,
    request: Request,
    principal: CurrentPrincipal,
    session: ReadSession,
    write: Session,
    enforcer: CurrentEnforcer,
    settings: AppSettings,
    retriever: CurrentRetriever,
) -> ChatCompletion | EventSourceResponse:
    """A grounded answer from the model's tenant, with numbered sources in the text and a
    `citations` field; `stream: true` sends `chat.completion.chunk` events and `[DONE]`."""
    access = await openai_service.access_for(session, principal, enforcer, data.model)
    ctx = ChatContext.of(
        access,
        settings=settings,
        retriever=retriever,
        generators=request.app.state.generator,
        database=request.app.state.database,
    )
    asked = openai_service.read(data, ctx)
    running = await openai_service.start(ctx, data.model, asked)
    if data.stream:
        return EventSourceResponse(openai_service.stream(ctx, running), ping=15)
    return await openai_service.complete(request, write, ctx, running)
