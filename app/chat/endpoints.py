from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sse_starlette import EventSourceResponse

from app.chat.adapter import chat_events, chat_response, message_out, question_of
from app.chat.answers import AnswerRuntime, Caller, answer_service
from app.chat.schemas import (
    MAX_SESSION_QUERY_CHARS,
    ChatRequest,
    ChatResponse,
    SessionDetail,
    SessionOut,
    SessionRename,
)
from app.chat.service import chat_service
from app.container import AppContainer
from app.kit.auth import AppSettings
from app.kit.authz import Authorizer, TenantAccess
from app.kit.db import ReadSession, Session
from app.kit.disconnect import cancel_on_disconnect
from app.kit.pagination import Page, Pagination
from app.kit.public_ids import ChatSessionRef
from app.models import ChatSession
from app.search.endpoints import CurrentRetriever
from app.search.visibility import Visibility

router = APIRouter(prefix="/api/v1/tenants/{tenant}/chat", tags=["chat"])

ChatAccess = Annotated[TenantAccess, Depends(Authorizer("chat", "ask"))]

STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "stream: true"}
}


def _answer_runtime(
    container: AppContainer, settings: AppSettings, retriever: CurrentRetriever
) -> AnswerRuntime:
    return AnswerRuntime(
        settings,
        retriever,
        container.generator,
        container.database,
        quotas=container.quotas,
        cache=container.cache if settings.cache.answers else None,
    )


# What the answer service runs with, for every API that answers.
CurrentAnswerRuntime = Annotated[AnswerRuntime, Depends(_answer_runtime)]


@router.post("", response_model=ChatResponse, responses=STREAM_RESPONSE)
async def chat(
    data: ChatRequest,
    request: Request,
    access: ChatAccess,
    runtime: CurrentAnswerRuntime,
    session: ReadSession,
    write: Session,
) -> ChatResponse | EventSourceResponse:
    """Answer from the tenant's documents you may see, with citations; `stream: true` sends
    Server-Sent Events: `delta` {text}, then `done` (this response) or `error`."""
    caller = Caller.of(access, via="chat")
    prepared = await answer_service.prepare(
        session, caller, question=question_of(data), runtime=runtime
    )
    if data.stream:
        return EventSourceResponse(chat_events(prepared), ping=15)
    answered = await cancel_on_disconnect(
        request, lambda cancel: answer_service.answer(write, prepared, cancel=cancel)
    )
    return chat_response(answered)


def _session_out(chat_session: ChatSession, message_count: int) -> SessionOut:
    return SessionOut(
        id=chat_session.id,
        title=chat_session.title,
        created_at=chat_session.created_at,
        updated_at=chat_session.updated_at,
        message_count=message_count,
    )


@router.get("/sessions", response_model=Page[SessionOut])
async def list_sessions(
    access: ChatAccess,
    session: ReadSession,
    page: Pagination,
    q: Annotated[str | None, Query(max_length=MAX_SESSION_QUERY_CHARS)] = None,
) -> Page[SessionOut]:
    """Your chat sessions in this tenant, most recently used first; `q`: only those whose
    title or one of whose questions contains it (any case)."""
    rows, total = await chat_service.list_sessions(
        session,
        access.principal,
        tenant_id=access.tenant_id,
        limit=page.limit,
        offset=page.offset,
        query=q.strip() if q else None,
    )
    items = [_session_out(r.session, r.message_count) for r in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/sessions/{session_id}", response_model=SessionDetail)
async def get_session(
    session_id: ChatSessionRef, access: ChatAccess, session: ReadSession
) -> SessionDetail:
    """One of your sessions with its messages. An answer that cited a document you can no
    longer see is withheld."""
    chat_session = await chat_service.owned_session(
        session, access.principal, tenant_id=access.tenant_id, session_id=session_id
    )
    transcript = await chat_service.transcript(session, Visibility.of(access), chat_session)
    feedback = await chat_service.feedback(session, transcript)
    messages = [message_out(e, feedback.get(e.stored.message.id)) for e in transcript]
    return SessionDetail(
        id=chat_session.id,
        title=chat_session.title,
        created_at=chat_session.created_at,
        updated_at=chat_session.updated_at,
        message_count=len(transcript),
        messages=messages,
    )


@router.patch("/sessions/{session_id}", response_model=SessionOut)
async def rename_session(
    session_id: ChatSessionRef, data: SessionRename, access: ChatAccess, session: Session
) -> SessionOut:
    """Rename one of your sessions."""
    chat_session = await chat_service.owned_session(
        session, access.principal, tenant_id=access.tenant_id, session_id=session_id
    )
    renamed = await chat_service.rename(
        session, actor=access.principal, chat_session=chat_session, title=data.title
    )
    count = await chat_service.message_count(session, renamed)
    return _session_out(renamed, count)


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(
    session_id: ChatSessionRef, access: ChatAccess, session: Session
) -> Response:
    """Delete one of your sessions for good: its messages, citations, sources and feedback."""
    chat_session = await chat_service.owned_session(
        session, access.principal, tenant_id=access.tenant_id, session_id=session_id
    )
    await chat_service.delete_session(session, actor=access.principal, chat_session=chat_session)
    return Response(status_code=204)
