from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import NEVER_REUSE_IDS, Base, utcnow


class ChatSession(Base):
    """One conversation of one user in one tenant; only its owner ever reads it."""

    __tablename__ = "chat_sessions"
    __table_args__ = (
        Index("ix_chat_sessions_owner", "tenant_id", "user_id", "updated_at"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # Erasing a person erases their conversations with them.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The start of the first question: the owner's own words, shown in their session list.
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (Index("ix_chat_messages_session", "session_id", "id"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    # user | assistant
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    # stop | length (assistant messages)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    # Assistant messages: whether the answer was given as grounded, what the faithfulness
    # check made of it (app/chat/faithfulness.py `Outcome`; not named "check", an SQL
    # keyword) and the note given with it. NULL for user messages and for answers stored
    # before revision 0009.
    grounded: Mapped[bool | None] = mapped_column()
    check_outcome: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChatCitation(Base):
    """A passage an answer cited. Kept per document so that an answer stops being shown (and
    fed back into later prompts) once its sources are hidden, and goes when they are purged."""

    __tablename__ = "chat_citations"
    __table_args__ = (Index("ix_chat_citations_document", "document_id"),)

    message_id: Mapped[int] = mapped_column(
        ForeignKey("chat_messages.id", ondelete="CASCADE"), primary_key=True
    )
    # The passage's number in the prompt, i.e. the [n] the answer uses.
    ref: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    chunk_id: Mapped[int] = mapped_column()
    title: Mapped[str] = mapped_column(String(500))
    snippet: Mapped[str] = mapped_column(Text)
    # The passage's sentence(s) that support the answer ("" for turns stored before quotes).
    quote: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The answer's words in the quote, a JSON list ("[]" for turns stored before 0018).
    highlight: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")


class ChatMessageSource(Base):
    """A document whose passages were in the prompt of an answer, cited or not. An answer is
    shown (and fed back into later prompts) only while every one of these is visible to the
    reader: citations are assigned after the fact, so they cannot be what decides that.

    No foreign key to documents on purpose: a row that outlives its document (hard delete)
    still withholds the answer, because a missing document is never visible."""

    __tablename__ = "chat_message_sources"
    __table_args__ = (Index("ix_chat_message_sources_document", "document_id"),)

    message_id: Mapped[int] = mapped_column(
        ForeignKey("chat_messages.id", ondelete="CASCADE"), primary_key=True
    )
    document_id: Mapped[int] = mapped_column(primary_key=True)
