from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import NEVER_REUSE_IDS, Base, new_subject, utcnow


class AuthSession(Base):
    """One sign-in: an API access token or a browser cookie. Tokens name it by `handle` (the
    JWT's `sid`); a token is honoured only while its session has not ended."""

    __tablename__ = "auth_sessions"
    __table_args__ = (
        Index("ix_auth_sessions_user", "user_id", "ended_at"),
        Index("ix_auth_sessions_expires", "expires_at"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    handle: Mapped[str] = mapped_column(String(64), unique=True, default=new_subject)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # "api" (POST /api/v1/auth/token) or "web" (the sign-in page's cookie)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    # signout | password_changed | password_reset | deactivated
    end_reason: Mapped[str | None] = mapped_column(String(32))
