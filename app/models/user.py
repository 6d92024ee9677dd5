from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import NEVER_REUSE_IDS, Base, new_subject, utcnow


class User(Base):
    __tablename__ = "users"
    # Never reuse an id: audit entries commit to (id, username) and must not match a newcomer.
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    # Mirrors the Casbin grouping rule (user, platform_admin, platform); Casbin decides, this
    # column is what the user list shows.
    is_platform_admin: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)
    # Carried in every JWT as `ver`; bumping it (password change or reset) revokes every token
    # issued before, on the next request, in every process.
    token_version: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Carried in tokens as `sub`: random per account, so it dies with the row and no token of
    # an erased account can ever name another, whatever happens to row numbers.
    subject: Mapped[str] = mapped_column(String(64), unique=True, default=new_subject)
