"""One chat request from start to finish: the session, the grounding, the answer (whole or
streamed as Server-Sent Events), storing the turn and the audit entry."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import ServerSentEvent
from starlette.requests import Request

from app.chat.citations import Citation
from app.chat.repository import chat_repository
from app.chat.schemas import ChatRequest, ChatResponse, CitationOut
from app.chat.service import Answer, Grounding, chat_service
from app.generation.base import GenerationLimits, Generator
from app.generation.limits import limits_from_settings
from app.generation.provider import GeneratorProvider
from app.kit.authz import TenantAccess
from app.kit.background import run_detached
from app.kit.db import Database
from app.kit.disconnect import cancel_on_disconnect
from app.kit.errors import CairnError, ResourceNotFound, error_body
from app.kit.principal import Principal
from app.kit.settings import Settings
from app.kit.text import clean_display_text
from app.models import ChatCitation
from app.search.retriever import Retriever
from app.search.visibility import Visibility

TITLE_CHARS = 80


@dataclass(frozen=True)
class ChatContext:
    """What a chat request runs with. Plain values only: a streamed answer outlives the
    request's database sessions, and with them any ORM object loaded there."""

    principal: Principal
    visibility: Visibility
    settings: Settings
    retriever: Retriever
    generators: GeneratorProvider
    database: Database

    @classmethod
    def of(
        cls,
        access: TenantAccess,
        *,
        settings: Settings,
        retriever: Retriever,
        generators: GeneratorProvider,
        database: Database,
    ) -> ChatContext:
        return cls(
            access.principal, Visibility.of(access), settings, retriever, generators, database
        )

    @property
    def tenant_id(self) -> int:
        return self.visibility.tenant_id

    async def audit(
        self,
        session: AsyncSession,
        grounding: Grounding,
        answer: Answer | None,
        *,
        via: str,
        chat_session_id: int | None = None,
    ) -> None:
        """Record the answer (None: it did not finish) when `chat.audit` is on."""
        if self.settings.chat.audit:
            await chat_service.audit(
                session,
                actor=self.principal,
                visibility=self.visibility,
                grounding=grounding,
                answer=answer,
                via=via,
                chat_session_id=chat_session_id,
            )

    async def audit_alone(
        self,
        grounding: Grounding,
        answer: Answer | None,
        *,
        via: str,
        chat_session_id: int | None = None,
    ) -> None:
        """The same in a transaction of its own: the request's session may be gone (a client
        that disconnected mid-stream)."""
        if not self.settings.chat.audit:
            return
        async with self.database.sessionmaker() as session, session.begin():
            await self.audit(session, grounding, answer, via=via, chat_session_id=chat_session_id)


@dataclass(frozen=True)
class Prepared:
    grounding: Grounding
    generator: Generator | None
    limits: GenerationLimits
    session_id: int | None


def citation_out(c: Citation | ChatCitation) -> CitationOut:
    return CitationOut(
        ref=c.ref, document_id=c.document_id, chunk_id=c.chunk_id, title=c.title, snippet=c.snippet
    )


class Conversation:
    async def prepare(self, session: AsyncSession, ctx: ChatContext, data: ChatRequest) -> Prepared:
        """Check the request, load the session's history and ground the question."""
        config = ctx.settings.chat
        top_k = chat_service.admit(config, data.question, data.top_k)
        visibility = ctx.visibility
        history = []
        if data.session_id is not None:
            chat_session = await chat_repository.get_owned(
                session,
                data.session_id,
                tenant_id=ctx.tenant_id,
                user_id=ctx.principal.user_id,
            )
            if chat_session is None:
                raise ResourceNotFound("Chat session not found")
            history = await chat_service.history(
                session, visibility, chat_session, config.history_turns
            )
        grounding = await chat_service.ground(
            visibility,
            ctx.retriever,
            config,
            question=data.question,
            top_k=top_k,
            history=history,
        )
        # Loaded before the answer starts, so a model that cannot load is a plain 503.
        generator = await ctx.generators.get() if grounding.relevant else None
        limits = limits_from_settings(ctx.settings.generator, max_new_tokens=data.max_new_tokens)
        return Prepared(grounding, generator, limits, data.session_id)

    async def answer(
        self, request: Request, session: AsyncSession, ctx: ChatContext, prepared: Prepared
    ) -> ChatResponse:
        """The whole answer; a client that disconnects stops the generation."""

        async def work(cancel: threading.Event) -> Answer:
            return await chat_service.complete(
                prepared.grounding, prepared.generator, prepared.limits, ctx.settings.chat, cancel
            )

        answer = await cancel_on_disconnect(request, work)
        if answer.finish_reason == "cancelled":
            # The client went away: nobody reads this, and a half answer is not history.
            await ctx.audit(
                session, prepared.grounding, None, via="chat", chat_session_id=prepared.session_id
            )
            return self._response(answer, prepared.session_id or 0)
        session_id = await self._store(session, ctx, prepared, answer)
        return self._response(answer, session_id)

    async def stream(self, ctx: ChatContext, prepared: Prepared) -> AsyncIterator[ServerSentEvent]:
        """`delta` events with text, then `done` with the whole response (citations and the
        session id), or `error` with SPEC.md's error body. Closing it stops the generation."""
        grounding = prepared.grounding
        parts: list[str] = []
        finished = False
        try:
            deltas = chat_service.stream(grounding, prepared.generator, prepared.limits)
            async with contextlib.aclosing(deltas) as running:
                async for delta in running:
                    parts.append(delta)
                    yield ServerSentEvent(
                        json.dumps({"text": delta}, ensure_ascii=False), event="delta"
                    )
            answer = chat_service.finish(grounding, "".join(parts), ctx.settings.chat)
            async with ctx.database.sessionmaker() as session, session.begin():
                session_id = await self._store(session, ctx, prepared, answer)
            finished = True
            yield ServerSentEvent(
                self._response(answer, session_id).model_dump_json(), event="done"
            )
        except CairnError as exc:
            yield ServerSentEvent(json.dumps(error_body(exc.code, exc.message)), event="error")
        finally:
            if not finished:
                # Failed, or the client went away mid-answer (the generation is stopped): record
                # which passages it was answered from, detached from the cancelled request.
                unfinished = ctx.audit_alone(
                    grounding, None, via="chat", chat_session_id=prepared.session_id
                )
                run_detached(unfinished, what="audit a chat answer")

    async def _store(
        self, session: AsyncSession, ctx: ChatContext, prepared: Prepared, answer: Answer
    ) -> int:
        """Store the turn (in a new session when none was given) and audit it."""
        chat_session = None
        if prepared.session_id is not None:
            chat_session = await chat_repository.get_owned(
                session,
                prepared.session_id,
                tenant_id=ctx.tenant_id,
                user_id=ctx.principal.user_id,
            )
        if chat_session is None:
            # New, or deleted by its owner while this answer was being written.
            chat_session = await chat_repository.create_session(
                session,
                tenant_id=ctx.tenant_id,
                user_id=ctx.principal.user_id,
                title=_title(prepared.grounding.question),
            )
        await chat_repository.add_turn(
            session,
            chat_session,
            question=prepared.grounding.question,
            answer=answer.text,
            finish_reason=answer.finish_reason,
            citations=answer.citations,
            sources=prepared.grounding.document_ids,
        )
        await ctx.audit(
            session, prepared.grounding, answer, via="chat", chat_session_id=chat_session.id
        )
        return chat_session.id

    @staticmethod
    def _response(answer: Answer, session_id: int) -> ChatResponse:
        return ChatResponse(
            answer=answer.text,
            citations=[citation_out(c) for c in answer.citations],
            session_id=session_id,
            finish_reason="length" if answer.finish_reason == "length" else "stop",
            grounded=answer.grounded,
        )


def _title(question: str) -> str:
    # Titles are listed to the user later: no bidi overrides or control characters in them.
    line = " ".join(clean_display_text(question).split()) or "Chat"
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


conversation = Conversation()
