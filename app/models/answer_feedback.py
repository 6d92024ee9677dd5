from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class AnswerFeedback(Base):
    """The asker's rating of one answer (thumbs up or down, with an optional comment): one per
    answer, replaceable. It goes with the answer: deleting the conversation, erasing the person
    or deleting the tenant removes it."""

    __tablename__ = "answer_feedback"
    __table_args__ = (Index("ix_answer_feedback_tenant", "tenant_id", "updated_at"),)

    message_id: Mapped[int] = mapped_column(
        ForeignKey("chat_messages.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # up | down
    rating: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
