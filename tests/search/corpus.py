"""Small synthetic corpora written straight to the database and indexed by the real Indexer.

No embedding model: each chunk gets a seeded random unit vector, so corpora are built in
milliseconds and a query vector can be anything of the same dimension. Used by the property
and shard-cache tests; the API tests ingest real files through the workers instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy import update

from app.kit.db import Database
from app.kit.settings import IndexSettings
from app.models import Chunk, Document, DocumentTag, Tenant
from app.search.index.writer import Indexer

DIM = 8
EMBEDDER = "test:random-8"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class DocSpec:
    texts: list[str]
    sensitivity: str = "internal"
    tags: list[str] = field(default_factory=list)
    day: int = 0
    # After indexing: soft-deleted, or back to "processing" (a re-ingestion in flight).
    deleted: bool = False
    reprocessing: bool = False


@dataclass
class BuiltChunk:
    id: int
    document_id: int
    tenant_id: int
    text: str
    vector: npt.NDArray[np.float32]


@dataclass
class BuiltDoc:
    id: int
    tenant_id: int
    spec: DocSpec

    @property
    def created_at(self) -> datetime:
        return EPOCH + timedelta(days=self.spec.day)


@dataclass
class Corpus:
    tenants: list[int] = field(default_factory=list)
    docs: dict[int, BuiltDoc] = field(default_factory=dict)
    chunks: dict[int, BuiltChunk] = field(default_factory=dict)


def unit_vectors(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


async def add_tenant(database: Database, slug: str) -> int:
    async with database.sessionmaker() as session, session.begin():
        tenant = Tenant(slug=slug, name=slug.upper())
        session.add(tenant)
        await session.flush()
        return tenant.id


async def add_documents(
    database: Database,
    corpus: Corpus,
    tenant_id: int,
    specs: list[DocSpec],
    rng: np.random.Generator,
) -> list[BuiltDoc]:
    """Insert documents (status processing) and their not-yet-indexed chunks."""
    built: list[BuiltDoc] = []
    async with database.sessionmaker() as session, session.begin():
        for spec in specs:
            content = json.dumps([tenant_id, len(corpus.docs), spec.texts]).encode()
            document = Document(
                tenant_id=tenant_id,
                title=f"doc {len(corpus.docs)}",
                media_type="text/plain",
                size_bytes=len(content),
                content_sha256=hashlib.sha256(content).hexdigest(),
                sensitivity=spec.sensitivity,
                status="processing",
                chunk_count=len(spec.texts),
                created_at=EPOCH + timedelta(days=spec.day),
            )
            session.add(document)
            await session.flush()
            session.add_all(DocumentTag(document_id=document.id, tag=t) for t in set(spec.tags))
            vectors = unit_vectors(rng, len(spec.texts))
            for position, text in enumerate(spec.texts):
                chunk = Chunk(
                    document_id=document.id,
                    tenant_id=tenant_id,
                    position=position,
                    text=text,
                    heading_path=json.dumps([f"section {position}"]),
                    token_count=len(text.split()),
                    embedding=vectors[position].astype("<f4").tobytes(),
                    shard_no=None,
                )
                session.add(chunk)
                await session.flush()
                corpus.chunks[chunk.id] = BuiltChunk(
                    chunk.id, document.id, tenant_id, text, vectors[position]
                )
            doc = BuiltDoc(document.id, tenant_id, spec)
            corpus.docs[document.id] = doc
            built.append(doc)
    return built


async def index(
    database: Database, index_root: Path, tenant_id: int, settings: IndexSettings
) -> None:
    """Flush the tenant's pending chunks into shards (marks the documents ready)."""
    await Indexer(database, index_root, settings).flush_tenant(
        tenant_id, embedder=EMBEDDER, dim=DIM
    )


async def apply_states(database: Database, docs: list[BuiltDoc]) -> None:
    """After indexing: soft-delete or send back to processing as the specs say."""
    async with database.sessionmaker() as session, session.begin():
        for doc in docs:
            if doc.spec.deleted:
                await session.execute(
                    update(Document).where(Document.id == doc.id).values(deleted_at=EPOCH)
                )
            if doc.spec.reprocessing:
                await session.execute(
                    update(Document).where(Document.id == doc.id).values(status="processing")
                )
