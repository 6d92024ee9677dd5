"""Answer feedback in the database. A rating is reachable only through its answer's session:
the asker's own (for rating) or the tenant's (for the tenant admin's list)."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AnswerFeedback, ChatMessage, ChatSession
from app.models.base import utcnow


class FeedbackRepository:
    async def owned_answer(
        self, session: AsyncSession, message_id: int, *, tenant_id: int, user_id: int
    ) -> ChatMessage | None:
        """The answer when it is in one of this user's sessions in this tenant; None otherwise
        (a question, another person's answer, another tenant's, or none at all)."""
        return await session.scalar(
            select(ChatMessage)
            .join(ChatSession, ChatSession.id == ChatMessage.session_id)
            .where(
                ChatMessage.id == message_id,
                ChatMessage.role == "assistant",
                ChatSession.tenant_id == tenant_id,
                ChatSession.user_id == user_id,
            )
        )

    async def put(
        self,
        session: AsyncSession,
        *,
        message_id: int,
        tenant_id: int,
        user_id: int,
        rating: str,
        comment: str | None,
    ) -> AnswerFeedback:
        """Store the rating of the answer, replacing any earlier one."""
        row = await session.get(AnswerFeedback, message_id)
        if row is None:
            row = AnswerFeedback(
                message_id=message_id,
                tenant_id=tenant_id,
                user_id=user_id,
                rating=rating,
                comment=comment,
            )
            session.add(row)
        else:
            row.rating = rating
            row.comment = comment
            row.updated_at = utcnow()
        await session.flush()
        return row

    async def remove(self, session: AsyncSession, message_id: int) -> bool:
        """Delete the answer's rating; whether there was one."""
        result = await session.execute(
            delete(AnswerFeedback).where(AnswerFeedback.message_id == message_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def list_for_tenant(
        self,
        session: AsyncSession,
        tenant_id: int,
        *,
        rating: str | None,
        limit: int | None,
        offset: int = 0,
    ) -> tuple[list[AnswerFeedback], int]:
        """A page of the tenant's ratings, most recent first (all of them without a limit)."""
        scoped = (
            select(AnswerFeedback)
            .join(ChatMessage, ChatMessage.id == AnswerFeedback.message_id)
            .join(ChatSession, ChatSession.id == ChatMessage.session_id)
            .where(ChatSession.tenant_id == tenant_id, AnswerFeedback.tenant_id == tenant_id)
        )
        if rating is not None:
            scoped = scoped.where(AnswerFeedback.rating == rating)
        total = await session.scalar(select(func.count()).select_from(scoped.subquery()))
        page = scoped.order_by(AnswerFeedback.updated_at.desc(), AnswerFeedback.message_id.desc())
        if limit is not None:
            page = page.limit(limit).offset(offset)
        rows = list((await session.scalars(page)).all())
        return rows, int(total or 0)

    async def questions(self, session: AsyncSession, answer_ids: list[int]) -> dict[int, str]:
        """Each answer's question: the asker's message just before it in its session."""
        if not answer_ids:
            return {}
        answer = select(ChatMessage.id, ChatMessage.session_id).where(
            ChatMessage.id.in_(answer_ids)
        )
        found: dict[int, str] = {}
        for answer_id, session_id in (await session.execute(answer)).all():
            question = await session.scalar(
                select(ChatMessage.content)
                .where(
                    ChatMessage.session_id == session_id,
                    ChatMessage.id < answer_id,
                    ChatMessage.role == "user",
                )
                .order_by(ChatMessage.id.desc())
                .limit(1)
            )
            found[answer_id] = question or ""
        return found


feedback_repository = FeedbackRepository()
