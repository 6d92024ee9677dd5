from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class TenantSettings(Base):
    """A knowledge base's own chunking, retrieval and keyword-index (BM25) settings (JSON
    objects, one per section; a key that is absent takes the server's configured default, so
    changing a default reaches every tenant that never set it)."""

    __tablename__ = "tenant_settings"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    chunking: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    retrieval: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    bm25: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[int | None] = mapped_column()
