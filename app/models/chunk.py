from __future__ import annotations

from sqlalchemy import ForeignKey, Index, LargeBinary, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import NEVER_REUSE_IDS, Base


class Chunk(Base):
    """A passage of a document. Its id is the FAISS / BM25 id; its vector is kept here too, so
    an index can be rebuilt from the database without re-embedding."""

    __tablename__ = "chunks"
    __table_args__ = (
        Index("ix_chunks_tenant_shard", "tenant_id", "shard_no"),
        Index("ix_chunks_document_position", "document_id", "position"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column()
    text: Mapped[str] = mapped_column(Text)
    heading_path: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of headings
    token_count: Mapped[int] = mapped_column()
    # float32 little-endian bytes of the normalised embedding.
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    # None until an index flush has written this chunk into a shard.
    shard_no: Mapped[int | None] = mapped_column()
