"""Answer feedback: the asker rates an answer (thumbs up or down, an optional comment), and the
tenant admin reads the tenant's rated answers with their questions, passages and checks.

A rating is the asker's alone to give, change or take back; another member of the tenant, or
anyone elsewhere, gets 404 as for the session itself. The audit log keeps the rating and how
long the comment was, never its words. The admin's list applies the same withholding as a
transcript: an answer written from a document the admin cannot see now (deleted since) shows
neither its text nor its passages."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import DetailValue, audit_service
from app.chat.repository import StoredMessage, chat_repository
from app.chat.service import WITHHELD, chat_service
from app.feedback.repository import feedback_repository
from app.kit.errors import ResourceNotFound
from app.kit.principal import Principal
from app.models import AnswerFeedback, ChatMessage
from app.search.visibility import Visibility


@dataclass(frozen=True)
class RatedEntry:
    feedback: AnswerFeedback
    stored: StoredMessage
    question: str
    withheld: bool

    @property
    def answer(self) -> str:
        return WITHHELD if self.withheld else self.stored.message.content


class FeedbackService:
    async def _answer(
        self, session: AsyncSession, principal: Principal, *, tenant_id: int, message_id: int
    ) -> ChatMessage:
        answer = await feedback_repository.owned_answer(
            session, message_id, tenant_id=tenant_id, user_id=principal.user_id
        )
        if answer is None:
            raise ResourceNotFound("Answer not found")
        return answer

    async def rate(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        tenant_id: int,
        message_id: int,
        rating: str,
        comment: str | None,
    ) -> AnswerFeedback:
        """Rate one of your own answers (replacing an earlier rating), audited without the
        comment's words."""
        answer = await self._answer(session, principal, tenant_id=tenant_id, message_id=message_id)
        row = await feedback_repository.put(
            session,
            message_id=answer.id,
            tenant_id=tenant_id,
            user_id=principal.user_id,
            rating=rating,
            comment=comment,
        )
        details: dict[str, DetailValue] = {"rating": rating, "comment_chars": len(comment or "")}
        await self._audit(session, "answer.feedback", principal, tenant_id, answer, details)
        return row

    async def unrate(
        self, session: AsyncSession, principal: Principal, *, tenant_id: int, message_id: int
    ) -> None:
        """Take back your rating of one of your answers (nothing to take back is no error)."""
        answer = await self._answer(session, principal, tenant_id=tenant_id, message_id=message_id)
        if await feedback_repository.remove(session, answer.id):
            await self._audit(session, "answer.feedback_delete", principal, tenant_id, answer)

    async def _audit(
        self,
        session: AsyncSession,
        action: str,
        principal: Principal,
        tenant_id: int,
        answer: ChatMessage,
        details: dict[str, DetailValue] | None = None,
    ) -> None:
        await audit_service.record(
            session,
            action=action,
            actor=principal,
            tenant_id=tenant_id,
            target_type="chat_message",
            target_id=answer.id,
            details=details,
        )

    async def rated_answers(
        self,
        session: AsyncSession,
        visibility: Visibility,
        *,
        rating: str | None,
        limit: int | None,
        offset: int = 0,
    ) -> tuple[list[RatedEntry], int]:
        """A page of the tenant's rated answers, most recently rated first (every one without
        a limit), each with its question and passages, withheld as in a transcript."""
        rows, total = await feedback_repository.list_for_tenant(
            session, visibility.tenant_id, rating=rating, limit=limit, offset=offset
        )
        ids = [r.message_id for r in rows]
        stored = await chat_repository.stored_messages(session, ids)
        questions = await feedback_repository.questions(session, ids)
        found = [(row, stored[row.message_id]) for row in rows if row.message_id in stored]
        hidden = await chat_service.withheld(session, visibility, [m for _, m in found])
        entries = [
            RatedEntry(row, message, questions.get(row.message_id, ""), withheld)
            for (row, message), withheld in zip(found, hidden, strict=True)
        ]
        return entries, total


feedback_service = FeedbackService()
