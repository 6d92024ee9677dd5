from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import NEVER_REUSE_IDS, Base, utcnow


class Tombstone(Base):
    """A purge (a document's hard delete) or an erasure (a person's), remembered after the
    data is gone, so that restoring a backup taken before it does the deletion again.

    Ids and hashes only, never content, titles or names: `digest` is the document's content
    SHA-256, or the SHA-256 of the erased account's random `subject`, which tells the row
    that was deleted apart from any later row that happens to get the same id. No foreign
    keys: a tombstone outlives what it names. The same records go to the append-only journal
    outside the database (app/backup/tombstones.py)."""

    __tablename__ = "tombstones"
    __table_args__ = (
        UniqueConstraint("kind", "subject_id"),
        Index("ix_tombstones_recorded", "recorded_at"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # "document" | "user"
    kind: Mapped[str] = mapped_column(String(16))
    # The document's tenant; None for a person (people belong to the platform).
    tenant_id: Mapped[int | None] = mapped_column()
    subject_id: Mapped[int] = mapped_column()
    digest: Mapped[str | None] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
