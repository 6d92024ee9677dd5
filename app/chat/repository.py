"""Chat sessions, messages and citations in the database. Every read is scoped to the owner:
a session of another user, or of another tenant, does not exist for the caller."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat.citations import Citation
from app.models import (
    AnswerFeedback,
    ChatCitation,
    ChatMessage,
    ChatMessageSource,
    ChatSession,
)
from app.models.base import utcnow
from app.search.repository import search_repository
from app.search.visibility import Visibility


@dataclass(frozen=True, slots=True)
class StoredMessage:
    message: ChatMessage
    citations: list[ChatCitation]
    # Every document whose passages were in the answer's prompt (cited or not).
    sources: frozenset[int] = frozenset()

    @property
    def depends_on(self) -> frozenset[int]:
        """The documents that must all stay visible to the reader for the answer to be shown."""
        return self.sources | {c.document_id for c in self.citations}


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session: ChatSession
    message_count: int


class ChatRepository:
    async def create_session(
        self, session: AsyncSession, *, tenant_id: int, user_id: int, title: str
    ) -> ChatSession:
        row = ChatSession(tenant_id=tenant_id, user_id=user_id, title=title)
        session.add(row)
        await session.flush()
        return row

    async def get_owned(
        self, session: AsyncSession, session_id: int, *, tenant_id: int, user_id: int
    ) -> ChatSession | None:
        """The session when it belongs to this user in this tenant; None otherwise."""
        row = await session.get(ChatSession, session_id)
        if row is None or row.tenant_id != tenant_id or row.user_id != user_id:
            return None
        return row

    async def list_owned(
        self,
        session: AsyncSession,
        *,
        tenant_id: int,
        user_id: int,
        limit: int,
        offset: int,
        query: str | None = None,
    ) -> tuple[list[SessionSummary], int]:
        """A page of the user's sessions in the tenant, most recently used first; with a
        `query`, only those whose title or one of whose questions contains it (any case)."""
        owned: tuple[ColumnElement[bool], ...] = (
            ChatSession.tenant_id == tenant_id,
            ChatSession.user_id == user_id,
        )
        if query:
            owned = (*owned, _mentions(query))
        total = await session.scalar(select(func.count()).select_from(ChatSession).where(*owned))
        counts = (
            select(ChatMessage.session_id, func.count().label("n"))
            .group_by(ChatMessage.session_id)
            .subquery()
        )
        rows = await session.execute(
            select(ChatSession, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.session_id == ChatSession.id)
            .where(*owned)
            .order_by(ChatSession.updated_at.desc(), ChatSession.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return [SessionSummary(s, int(n)) for s, n in rows.all()], int(total or 0)

    async def messages(
        self, session: AsyncSession, chat_session_id: int, *, last: int | None = None
    ) -> list[StoredMessage]:
        """The session's messages in order (only the `last` ones when given), each with the
        citations of its answer."""
        statement = select(ChatMessage).where(ChatMessage.session_id == chat_session_id)
        if last is not None:
            statement = statement.order_by(ChatMessage.id.desc()).limit(last)
        else:
            statement = statement.order_by(ChatMessage.id)
        messages = list((await session.scalars(statement)).all())
        messages.sort(key=lambda m: m.id)
        return await self._stored(session, messages)

    async def stored_messages(
        self, session: AsyncSession, message_ids: Sequence[int]
    ) -> dict[int, StoredMessage]:
        """These messages (whatever their session) with their citations and sources, by id."""
        if not message_ids:
            return {}
        rows = await session.scalars(
            select(ChatMessage).where(ChatMessage.id.in_(list(message_ids)))
        )
        stored = await self._stored(session, sorted(rows, key=lambda m: m.id))
        return {m.message.id: m for m in stored}

    async def _stored(
        self, session: AsyncSession, messages: Sequence[ChatMessage]
    ) -> list[StoredMessage]:
        if not messages:
            return []
        cited = await session.scalars(
            select(ChatCitation)
            .where(ChatCitation.message_id.in_([m.id for m in messages]))
            .order_by(ChatCitation.message_id, ChatCitation.ref)
        )
        by_message: dict[int, list[ChatCitation]] = {}
        for citation in cited:
            by_message.setdefault(citation.message_id, []).append(citation)
        sourced = await session.execute(
            select(ChatMessageSource.message_id, ChatMessageSource.document_id).where(
                ChatMessageSource.message_id.in_([m.id for m in messages])
            )
        )
        sources: dict[int, set[int]] = {}
        for message_id, document_id in sourced:
            sources.setdefault(message_id, set()).add(document_id)
        return [
            StoredMessage(m, by_message.get(m.id, []), frozenset(sources.get(m.id, ())))
            for m in messages
        ]

    async def add_turn(
        self,
        session: AsyncSession,
        chat_session: ChatSession,
        *,
        question: str,
        answer: str,
        finish_reason: str,
        grounded: bool,
        check: str,
        note: str | None,
        citations: Sequence[Citation],
        sources: Sequence[int],
    ) -> int:
        """Store a question and its answer (with what the faithfulness check made of it) with
        the answer's citations and the documents whose passages were in its prompt; the
        answer's message id."""
        asked = ChatMessage(session_id=chat_session.id, role="user", content=question)
        answered = ChatMessage(
            session_id=chat_session.id,
            role="assistant",
            content=answer,
            finish_reason=finish_reason,
            grounded=grounded,
            check_outcome=check,
            note=note,
        )
        session.add_all([asked, answered])
        await session.flush()
        session.add_all(
            ChatCitation(
                message_id=answered.id,
                ref=c.ref,
                document_id=c.document_id,
                chunk_id=c.chunk_id,
                title=c.title,
                snippet=c.snippet,
                quote=c.quote,
                highlight=json.dumps(list(c.highlight), ensure_ascii=False),
            )
            for c in citations
        )
        session.add_all(
            ChatMessageSource(message_id=answered.id, document_id=document_id)
            for document_id in sorted(set(sources))
        )
        chat_session.updated_at = utcnow()
        await session.flush()
        return answered.id

    async def rename(self, session: AsyncSession, chat_session: ChatSession, title: str) -> None:
        """Give the session a title of its owner's choosing (its last use does not change)."""
        await session.execute(
            update(ChatSession).where(ChatSession.id == chat_session.id).values(title=title)
        )
        chat_session.title = title

    async def delete_session(self, session: AsyncSession, chat_session: ChatSession) -> None:
        """Delete the session; its messages, citations, sources and feedback go with it (ON
        DELETE CASCADE, spelled out too so no row is left whatever the database enforces)."""
        messages = select(ChatMessage.id).where(ChatMessage.session_id == chat_session.id)
        for table in (AnswerFeedback, ChatCitation, ChatMessageSource):
            await session.execute(delete(table).where(table.message_id.in_(messages)))
        await session.execute(delete(ChatMessage).where(ChatMessage.session_id == chat_session.id))
        await session.execute(delete(ChatSession).where(ChatSession.id == chat_session.id))

    async def message_count(self, session: AsyncSession, chat_session_id: int) -> int:
        count = await session.scalar(
            select(func.count())
            .select_from(ChatMessage)
            .where(ChatMessage.session_id == chat_session_id)
        )
        return int(count or 0)

    async def feedback_of(
        self, session: AsyncSession, message_ids: Sequence[int]
    ) -> dict[int, AnswerFeedback]:
        """The feedback given on these messages, by message id."""
        if not message_ids:
            return {}
        rows = await session.scalars(
            select(AnswerFeedback).where(AnswerFeedback.message_id.in_(list(message_ids)))
        )
        return {row.message_id: row for row in rows}

    async def visible_documents(
        self, session: AsyncSession, visibility: Visibility, document_ids: set[int]
    ) -> set[int]:
        """Which of these documents the visibility admits now (soft delete, sensitivity and
        readiness apply to old answers exactly as to new searches)."""
        if not document_ids:
            return set()
        narrowed = dataclasses.replace(visibility, document_ids=tuple(sorted(document_ids)))
        statement = search_repository.visible_documents_statement(narrowed)
        return {int(i) for i in (await session.scalars(statement)).all()}


def stored_highlight(citation: ChatCitation) -> list[str]:
    """A stored citation's highlighted words ([] when the column holds no JSON list of
    strings: written by hand, or by another version)."""
    try:
        terms = json.loads(citation.highlight or "[]")
    except ValueError:
        return []
    if not isinstance(terms, list):
        return []
    return [t for t in terms if isinstance(t, str)]


def _mentions(query: str) -> ColumnElement[bool]:
    """The session's title or one of its questions contains `query`, in any case (LIKE
    wildcards in it are taken literally)."""
    needle = query.lower()
    asked = (
        select(ChatMessage.id)
        .where(
            ChatMessage.session_id == ChatSession.id,
            ChatMessage.role == "user",
            func.lower(ChatMessage.content).contains(needle, autoescape=True),
        )
        .exists()
    )
    return func.lower(ChatSession.title).contains(needle, autoescape=True) | asked


chat_repository = ChatRepository()
