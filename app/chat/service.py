"""Chat sessions: their history for the next prompt, their transcripts with answers withheld
once a document they were written from is out of the reader's sight, listing and deletion.
Answering itself is app/chat/answers.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.chat.prompt import Turn
from app.chat.repository import SessionSummary, StoredMessage, chat_repository
from app.kit.errors import ResourceNotFound
from app.kit.principal import Principal
from app.models import AnswerFeedback, ChatSession
from app.search.visibility import Visibility


@dataclass(frozen=True)
class TranscriptEntry:
    stored: StoredMessage
    # The answer was written from a document the caller can no longer see (whether or not
    # it cited it): not shown, and not fed into later prompts.
    withheld: bool

    @property
    def role(self) -> str:
        return self.stored.message.role

    @property
    def content(self) -> str:
        return self.stored.message.content


WITHHELD = "This answer is withheld: a document it was written from is no longer available to you."


class ChatService:
    async def owned_session(
        self, session: AsyncSession, principal: Principal, *, tenant_id: int, session_id: int
    ) -> ChatSession:
        """The principal's own session in the tenant; 404 for any other, existing or not."""
        chat_session = await chat_repository.get_owned(
            session, session_id, tenant_id=tenant_id, user_id=principal.user_id
        )
        if chat_session is None:
            raise ResourceNotFound("Chat session not found")
        return chat_session

    async def list_sessions(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        tenant_id: int,
        limit: int,
        offset: int,
        query: str | None = None,
    ) -> tuple[list[SessionSummary], int]:
        """A page of the principal's sessions in the tenant, most recently used first; with a
        `query`, only those whose title or questions contain it. Nobody else's ever match."""
        return await chat_repository.list_owned(
            session,
            tenant_id=tenant_id,
            user_id=principal.user_id,
            limit=limit,
            offset=offset,
            query=query,
        )

    async def message_count(self, session: AsyncSession, chat_session: ChatSession) -> int:
        """How many messages the session holds."""
        return await chat_repository.message_count(session, chat_session.id)

    async def feedback(
        self, session: AsyncSession, transcript: list[TranscriptEntry]
    ) -> dict[int, AnswerFeedback]:
        """The reader's own ratings of the transcript's answers, by message id."""
        answers = [e.stored.message.id for e in transcript if e.role == "assistant"]
        return await chat_repository.feedback_of(session, answers)

    async def rename(
        self, session: AsyncSession, *, actor: Principal, chat_session: ChatSession, title: str
    ) -> ChatSession:
        """Give the session its owner's title, and audit that (ids only: a title is the
        owner's own words)."""
        await chat_repository.rename(session, chat_session, title)
        await self._audit(session, "chat_session.rename", actor, chat_session)
        return chat_session

    async def _audit(
        self, session: AsyncSession, action: str, actor: Principal, chat_session: ChatSession
    ) -> None:
        await audit_service.record(
            session,
            action=action,
            actor=actor,
            tenant_id=chat_session.tenant_id,
            target_type="chat_session",
            target_id=chat_session.id,
        )

    async def history(
        self,
        session: AsyncSession,
        visibility: Visibility,
        chat_session: ChatSession,
        turns: int,
    ) -> list[Turn]:
        """The session's last `turns` question/answer pairs for the prompt, leaving out any
        answer written from a document the caller can no longer see."""
        if turns <= 0:
            return []
        entries = await self.transcript(session, visibility, chat_session, last=2 * turns)
        pairs: list[Turn] = []
        for asked, answered in zip(entries, entries[1:], strict=False):
            if asked.role != "user" or answered.role != "assistant" or answered.withheld:
                continue
            pairs.append(Turn(asked.content, answered.content, answered.stored.depends_on))
        return pairs[-turns:]

    async def transcript(
        self,
        session: AsyncSession,
        visibility: Visibility,
        chat_session: ChatSession,
        *,
        last: int | None = None,
    ) -> list[TranscriptEntry]:
        """The session's messages (only the `last` ones when given), marking answers written
        from any document the caller cannot see now: every document that was in the prompt
        counts, not only the cited ones, since citations are assigned after the fact."""
        stored = await chat_repository.messages(session, chat_session.id, last=last)
        hidden = await self.withheld(session, visibility, stored)
        return [TranscriptEntry(m, h) for m, h in zip(stored, hidden, strict=True)]

    async def withheld(
        self, session: AsyncSession, visibility: Visibility, stored: Sequence[StoredMessage]
    ) -> list[bool]:
        """For each message, whether it was written from a document the reader cannot see
        now (any document of its prompt, cited or not)."""
        needed = set().union(*(m.depends_on for m in stored)) if stored else set()
        visible = await chat_repository.visible_documents(session, visibility, needed)
        return [not m.depends_on <= visible for m in stored]

    async def delete_session(
        self, session: AsyncSession, *, actor: Principal, chat_session: ChatSession
    ) -> None:
        """Delete the session with its messages, citations, sources and feedback for good,
        and audit that (ids only)."""
        await chat_repository.delete_session(session, chat_session)
        await self._audit(session, "chat_session.delete", actor, chat_session)


chat_service = ChatService()
