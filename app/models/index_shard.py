from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class IndexShard(Base):
    """The current version of one shard file; readers reload when the version moves."""

    __tablename__ = "index_shards"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "shard_no"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # "vector" | "bm25"
    shard_no: Mapped[int] = mapped_column()
    version: Mapped[int] = mapped_column(default=0)
    size: Mapped[int] = mapped_column(default=0)
    # The embedding model and dimension a vector shard was built with; mixing is refused.
    embedder: Mapped[str | None] = mapped_column(String(200))
    dim: Mapped[int | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
