from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import NEVER_REUSE_IDS, Base, utcnow


class DeletionReceipt(Base):
    """What an erasure (a document's purge, a person's erasure) removed and how it was verified.

    No foreign keys on purpose: the receipt outlives what it describes. Names and titles never
    appear here, only `name_digest`, a keyed hash of them."""

    __tablename__ = "deletion_receipts"
    __table_args__ = (
        Index("ix_deletion_receipts_tenant", "tenant_id", "requested_at"),
        Index("ix_deletion_receipts_subject", "subject_type", "subject_id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # None for a person's erasure (people belong to the platform, not one tenant).
    tenant_id: Mapped[int | None] = mapped_column()
    # "document" | "document_version" (a replaced file's old version) | "user"
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[int] = mapped_column()
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    name_digest: Mapped[str | None] = mapped_column(String(64))
    requested_by: Mapped[int | None] = mapped_column()
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column()
    # "pending" until verified, then "done"; "failed" after the last attempt (still pending work).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    # JSON: counts per store; JSON: {"passed": bool, "checks": [...]}
    removed: Mapped[str] = mapped_column(Text, default="{}")
    verification: Mapped[str] = mapped_column(Text, default="{}")
    # SHA-256 of the completed receipt's canonical content; also recorded in the audit chain.
    receipt_hash: Mapped[str | None] = mapped_column(String(64))
