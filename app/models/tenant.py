from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import NEVER_REUSE_IDS, Base, utcnow


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # Days a soft-deleted document stays restorable before the scheduled purge; None: the
    # deployment's `retention_days`.
    retention_days: Mapped[int | None] = mapped_column()
    # Moves with every change of what the tenant's members may see (a document ready, deleted,
    # restored, purged or re-classified; a membership changed): cached answers are keyed by it
    # (app/cache/versions.py), so one computed before the change is never found again.
    content_version: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
