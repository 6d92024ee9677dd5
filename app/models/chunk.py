from __future__ import annotations

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, false, text, true
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import NEVER_REUSE_IDS, Base

# The condition of a hidden chunk, spelled as the partial index spells it, so that the planner
# matches the query to the index (SQLite compares the expressions literally).
HIDDEN_SQL = "NOT enabled OR staged"


class Chunk(Base):
    """A passage of a document. Its id is the FAISS / BM25 id; its vector is kept here too, so
    an index can be rebuilt from the database without re-embedding."""

    __tablename__ = "chunks"
    __table_args__ = (
        Index("ix_chunks_tenant_shard", "tenant_id", "shard_no"),
        Index("ix_chunks_document_position", "document_id", "position"),
        # Every search asks for the tenant's hidden chunks (disabled, or staged by a re-parse):
        # a partial index keeps that a lookup of the few, not a scan of the tenant's chunks.
        Index(
            "ix_chunks_hidden",
            "tenant_id",
            sqlite_where=text(HIDDEN_SQL),
            postgresql_where=text(HIDDEN_SQL),
        ),
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
    # Curation (app/documents/curation.py): a disabled chunk stays in the shards but no search
    # returns it; `origin` says whether a person wrote its text ("edited", "added").
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    origin: Mapped[str] = mapped_column(String(16), default="parsed", server_default="parsed")
    # A re-parse writes a document's new chunks staged (hidden) and swaps them for the old
    # ones in one transaction, so search answers from the old chunks until then.
    staged: Mapped[bool] = mapped_column(default=False, server_default=false())
