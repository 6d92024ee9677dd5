"""Index writing: move a tenant's not-yet-indexed chunks into its FAISS and BM25 shards.

Workers store chunks (with their vectors) in the database; `flush_tenant` then appends them
to the tenant's open shard under the tenant's writer lock, writes new versioned shard files
atomically, and only then records the new versions and marks the documents ready — all in one
transaction. A crash anywhere leaves the previous files and versions in force, and the
chunks still pending, so the next flush simply redoes the work.

BM25 tokens are made with the tenant's stemmer (its knowledge base's `bm25.stemmer`, else
`index.bm25_stemmer`), read from `tenant_settings` on every write under the writer lock, so
every process writes with the setting in force without caching it. A shard is never mixed:
when the stemmer changed since the open shard was written, the open shard's BM25 tokens are
made again from the stored chunk text first (`retokenize_bm25`, which the keyword-index
rebuild job runs for every shard). The vector and BM25 files of a shard may then be at
different versions; each is loaded at its own, and a flush writes both at one above the
higher.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.cache import versions
from app.crypto.chunks import (
    open_chunk_headings,
    open_chunk_text,
    open_chunk_vector,
    seal_chunk_vector,
)
from app.crypto.keyring import Keyring
from app.documents.status import document_status
from app.kit.db import Database
from app.kit.envelope import DataKey, shard_sealer
from app.kit.settings import IndexSettings
from app.knowledge_base.repository import knowledge_base_repository
from app.models import Chunk, IndexShard
from app.search.index import (
    BM25Shard,
    StemmerMismatch,
    VectorShardConfig,
    add_documents,
    add_vectors,
    analyzer_id,
    build_bm25_shard,
    build_shard,
    check_analyzer,
    document_tokens,
    load_bm25_shard,
    load_shard,
    maybe_upgrade,
    save_bm25_shard,
    save_shard,
)
from app.search.index.erasure import remove_chunks_locked
from app.search.index.handoff import ShardReader, ShardWrite
from app.search.index.layout import shard_path, stale_versions, tenant_dir, version_of
from app.search.index.locks import tenant_index_lock
from app.search.index.shard_repository import shard_repository
from app.search.index.tokenize import STEMMERS, StemmerName
from ingest.embedding import Embedder, check_compatible, decode_vectors, passage_text

logger = logging.getLogger(__name__)


# Writes chunk rows inside `Indexer.rewrite`'s transaction.
Change = Callable[[AsyncSession], Awaitable[None]]

# Runs a blocking call off the event loop: `asyncio.to_thread`, or the in-process pool's
# lower-priority threads (ingest/priority.py), so that rewriting a large open shard does not
# take the cores from the requests beside it.
Offload = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class PendingChunk:
    id: int
    document_id: int
    text: str
    embedding: bytes
    heading_path: str  # JSON list, as stored


def _write_shards(
    index_root: Path,
    tenant_id: int,
    shard_no: int,
    version: int,
    vector_index: Any,
    bm25: BM25Shard,
    key: DataKey | None = None,
) -> None:
    save_shard(
        vector_index,
        shard_path(index_root, tenant_id, "vector", shard_no, version),
        shard_sealer(key, tenant_id, "vector", shard_no, version),
    )
    save_bm25_shard(
        bm25,
        shard_path(index_root, tenant_id, "bm25", shard_no, version),
        shard_sealer(key, tenant_id, "bm25", shard_no, version),
    )


def _extend(
    index_root: Path,
    tenant_id: int,
    shard_no: int,
    versions: tuple[int, int],
    chunks: list[PendingChunk],
    dim: int,
    config: VectorShardConfig,
    stemmer: StemmerName,
    heading_repeat: int,
    key: DataKey | None = None,
) -> tuple[Any, BM25Shard]:
    """Load the shard at `versions` (vector, BM25; 0 = none yet) and return it with `chunks`
    added. Raises StemmerMismatch when its BM25 tokens were made with another stemmer."""
    ids = np.array([c.id for c in chunks], dtype=np.int64)
    vectors = decode_vectors([c.embedding for c in chunks], dim)
    tokens = [
        document_tokens(
            c.text, json.loads(c.heading_path), stemmer=stemmer, heading_repeat=heading_repeat
        )
        for c in chunks
    ]
    analyzer = analyzer_id(stemmer, heading_repeat)
    vector_version, bm25_version = versions
    if vector_version == 0:
        return build_shard(vectors, ids, config), build_bm25_shard(ids, tokens, analyzer=analyzer)
    bm25 = load_bm25_shard(
        shard_path(index_root, tenant_id, "bm25", shard_no, bm25_version),
        shard_sealer(key, tenant_id, "bm25", shard_no, bm25_version),
    )
    # Tokens of two analyzers in one shard would never match a query consistently.
    check_analyzer(bm25, analyzer, where=f" of tenant {tenant_id}")
    vector_index = load_shard(
        shard_path(index_root, tenant_id, "vector", shard_no, vector_version),
        shard_sealer(key, tenant_id, "vector", shard_no, vector_version),
    )
    add_vectors(vector_index, vectors, ids)
    return maybe_upgrade(vector_index, config), add_documents(bm25, ids, tokens)


@dataclass(frozen=True)
class StoredText:
    text: str
    heading_path: str  # JSON list, as stored


def _add_retokenized(
    shard: BM25Shard,
    ids: list[int],
    texts: dict[int, StoredText],
    stemmer: StemmerName,
    heading_repeat: int,
) -> BM25Shard:
    """`shard` with the chunks `ids` added, tokenized from their stored text. A chunk whose
    row is already gone (a re-parse deletes rows before it takes their ids out of the shards)
    keeps its id with no terms, so the BM25 and vector files still hold the same ids; its
    removal follows under the writer lock."""
    tokens = [
        document_tokens(
            found.text,
            json.loads(found.heading_path),
            stemmer=stemmer,
            heading_repeat=heading_repeat,
        )
        if (found := texts.get(chunk_id)) is not None
        else []
        for chunk_id in ids
    ]
    return add_documents(shard, ids, tokens)


class Indexer:
    def __init__(
        self,
        database: Database,
        index_root: Path,
        settings: IndexSettings,
        keyring: Keyring | None = None,
    ) -> None:
        self.database = database
        self.index_root = index_root
        self.settings = settings
        self.keyring = keyring
        # Readers in this process that take each new shard version from memory (the API's
        # shard cache beside its embedded workers).
        self.readers: list[ShardReader] = []

    async def keys(self, tenant_id: int) -> tuple[DataKey | None, DataKey | None]:
        """(the key shards are read with, the key new shard versions are sealed with)."""
        if self.keyring is None:
            return None, None
        write = await self.keyring.for_writing(tenant_id)
        return write or await self.keyring.for_reading(tenant_id), write

    def vector_config(self, dim: int) -> VectorShardConfig:
        """Shard construction settings for vectors of this dimension."""
        return VectorShardConfig(
            dim=dim,
            approximate_threshold=self.settings.approximate_threshold,
            nprobe=self.settings.nprobe,
        )

    async def rewrite(
        self,
        tenant_id: int,
        chunk_ids: Sequence[int],
        change: Change,
        *,
        embedder: str,
        dim: int,
    ) -> None:
        """Take `chunk_ids` out of the tenant's shards, run `change` (which writes chunk rows:
        new text and vector with `shard_no` None, new chunks, deleted ones) and index what it
        left pending — all under the tenant's writer lock, so no flush beside it indexes a
        half-changed chunk. When it returns, this process's searches see the change (the
        shard cache is told); other processes within `search.version_poll_seconds`, and the
        rows themselves (text, enabled) at once, since every hit's row is read again."""
        try:
            async with tenant_index_lock(self.database, self.index_root, tenant_id):
                await remove_chunks_locked(
                    self.database,
                    self.index_root,
                    tenant_id,
                    np.array(sorted(chunk_ids), dtype=np.int64),
                    keys=await self.keys(tenant_id),
                )
                async with self.database.sessionmaker() as session, session.begin():
                    await change(session)
                    # Cached answers quoted the old text.
                    await versions.bump(session, tenant_id)
                while await self._flush_step(tenant_id, embedder=embedder, dim=dim):
                    pass
        finally:
            for reader in self.readers:
                reader.invalidate(tenant_id)

    async def flush_tenant(
        self, tenant_id: int, *, embedder: str, dim: int, offload: Offload = asyncio.to_thread
    ) -> int:
        """Index every pending chunk of the tenant; returns how many were indexed."""
        total = 0
        async with tenant_index_lock(self.database, self.index_root, tenant_id):
            while True:
                written = await self._flush_step(
                    tenant_id, embedder=embedder, dim=dim, offload=offload
                )
                if written == 0:
                    return total
                total += written

    async def stemmer(self, session: AsyncSession, tenant_id: int) -> StemmerName:
        """The BM25 stemmer of the tenant's next write: its knowledge base's, else the
        server's. Read from the database each time (no process keeps a stale copy)."""
        stored = await knowledge_base_repository.stored_stemmer(session, tenant_id)
        for name in STEMMERS:
            if stored == name:
                return name
        return self.settings.bm25_stemmer

    async def _flush_step(
        self,
        tenant_id: int,
        *,
        embedder: str,
        dim: int,
        version_floor: int = 0,
        offload: Offload = asyncio.to_thread,
    ) -> int:
        read_key, write_key = await self.keys(tenant_id)
        async with self.database.read_sessionmaker() as session:
            shards = await shard_repository.vector_shards(session, tenant_id)
            self._check_embedder(shards, embedder, dim)
            stemmer = await self.stemmer(session, tenant_id)
            open_shard = shards[-1] if shards else None
            if open_shard is None or open_shard.size >= self.settings.shard_capacity:
                shard_no = (open_shard.shard_no + 1) if open_shard else 0
                # A new shard starts above any version a reader may still have cached
                # (a rebuild reuses shard numbers).
                version, bm25_version, size = version_floor, version_floor, 0
            else:
                shard_no, version, size = open_shard.shard_no, open_shard.version, open_shard.size
                current = await shard_repository.versions(session, tenant_id)
                bm25_version = current.get(("bm25", shard_no), version)
            room = min(self.settings.flush_batch, self.settings.shard_capacity - size)
            rows = await session.execute(
                select(
                    Chunk.id,
                    Chunk.document_id,
                    Chunk.position,
                    Chunk.text,
                    Chunk.embedding,
                    Chunk.heading_path,
                )
                .where(Chunk.tenant_id == tenant_id, Chunk.shard_no.is_(None))
                .order_by(Chunk.id)
                .limit(room)
            )
            pending = [
                PendingChunk(
                    c.id,
                    c.document_id,
                    open_chunk_text(read_key, tenant_id, c.document_id, c.position, c.text),
                    open_chunk_vector(read_key, tenant_id, c.document_id, c.position, c.embedding),
                    open_chunk_headings(
                        read_key, tenant_id, c.document_id, c.position, c.heading_path
                    ),
                )
                for c in rows
            ]
        if not pending:
            return 0
        base_versions = (version, bm25_version) if size else (0, 0)
        try:
            vector_index, bm25 = await offload(
                _extend,
                self.index_root,
                tenant_id,
                shard_no,
                base_versions,
                pending,
                dim,
                self.vector_config(dim),
                stemmer,
                self.settings.bm25_heading_repeat,
                read_key,
            )
        except StemmerMismatch:
            # The knowledge base chose another stemmer since the open shard was written: its
            # tokens are made again first (the rebuild job would get there too), so that the
            # new chunks are tokenized with the stemmer in force and no shard mixes two.
            if not await self._retokenize_locked(tenant_id, shard_no, stemmer, offload=offload):
                raise
            return await self._flush_step(
                tenant_id, embedder=embedder, dim=dim, version_floor=version_floor, offload=offload
            )
        new_version = max(version, bm25_version) + 1
        await offload(
            _write_shards,
            self.index_root,
            tenant_id,
            shard_no,
            new_version,
            vector_index,
            bm25,
            write_key,
        )
        write = ShardWrite(
            tenant_id=tenant_id,
            shard_no=shard_no,
            base_versions=base_versions,
            version=new_version,
            vector=vector_index,
            bm25=bm25,
            added_ids=np.array([c.id for c in pending], dtype=np.int64),
            added_documents=np.array([c.document_id for c in pending], dtype=np.int64),
            paths=(
                shard_path(self.index_root, tenant_id, "vector", shard_no, new_version),
                shard_path(self.index_root, tenant_id, "bm25", shard_no, new_version),
            ),
        )
        installed: list[ShardReader] = []
        for reader in self.readers:
            install = await offload(reader.prepare, write)
            if install is not None:
                # Before the commit, which makes the documents ready: a document shown ready
                # is searchable at once. Until then its chunks are hidden like any other of a
                # document being processed.
                install()
                installed.append(reader)
        try:
            await self._commit(
                tenant_id, shard_no, new_version, size + len(pending), pending, embedder, dim
            )
        except BaseException:
            # The retry writes this version number again, maybe with more chunks: a reader
            # holding this attempt's would never notice. It loads what is committed instead.
            for reader in installed:
                reader.invalidate(tenant_id)
            raise
        # Each kind keeps the version it replaced, for slow readers.
        previous = {"vector": version, "bm25": bm25_version}
        for kind in ("vector", "bm25"):
            keep_from = min(previous[kind], new_version - 1)
            for path in stale_versions(self.index_root, tenant_id, kind, shard_no, keep_from):
                path.unlink(missing_ok=True)
        return len(pending)

    async def retokenize_bm25(self, tenant_id: int, shard_no: int) -> bool:
        """Under the tenant's writer lock, rewrite one BM25 shard as a new version tokenized
        from the stored chunk text with the tenant's stemmer in force, unless it already is;
        whether it was rewritten. Vectors are untouched; searches go on meanwhile (each shard
        is searched with the analyzer it records)."""
        async with tenant_index_lock(self.database, self.index_root, tenant_id):
            async with self.database.read_sessionmaker() as session:
                stemmer = await self.stemmer(session, tenant_id)
            return await self._retokenize_locked(tenant_id, shard_no, stemmer)

    async def _retokenize_locked(
        self,
        tenant_id: int,
        shard_no: int,
        stemmer: StemmerName,
        *,
        offload: Offload = asyncio.to_thread,
    ) -> bool:
        read_key, write_key = await self.keys(tenant_id)
        async with self.database.read_sessionmaker() as session:
            current = await shard_repository.versions(session, tenant_id)
        version = current.get(("bm25", shard_no), 0)
        if not version:
            return False
        heading_repeat = self.settings.bm25_heading_repeat
        analyzer = analyzer_id(stemmer, heading_repeat)
        old = await offload(
            load_bm25_shard,
            shard_path(self.index_root, tenant_id, "bm25", shard_no, version),
            shard_sealer(read_key, tenant_id, "bm25", shard_no, version),
        )
        if old.analyzer == analyzer:
            return False
        rebuilt = build_bm25_shard([], [], analyzer=analyzer)
        ids = old.ids.tolist()
        # In slices: the stored text of a whole shard is never in memory at once.
        step = self.settings.flush_batch
        for start in range(0, len(ids), step):
            part = ids[start : start + step]
            texts = await self._stored_texts(tenant_id, part, read_key)
            rebuilt = await offload(_add_retokenized, rebuilt, part, texts, stemmer, heading_repeat)
        new_version = version + 1
        await offload(
            save_bm25_shard,
            rebuilt,
            shard_path(self.index_root, tenant_id, "bm25", shard_no, new_version),
            shard_sealer(write_key, tenant_id, "bm25", shard_no, new_version),
        )
        async with self.database.sessionmaker() as session, session.begin():
            await shard_repository.record(
                session,
                tenant_id,
                "bm25",
                shard_no,
                version=new_version,
                size=rebuilt.n_docs,
                create=False,
            )
            # Cached answers were retrieved with the old terms.
            await versions.bump(session, tenant_id)
        # This process's searches load the new version at once; others within
        # `search.version_poll_seconds`.
        for reader in self.readers:
            reader.invalidate(tenant_id)
        for path in stale_versions(self.index_root, tenant_id, "bm25", shard_no, version):
            path.unlink(missing_ok=True)
        logger.info(
            "tenant %s: BM25 shard %s re-tokenized (%s, %s chunks)",
            tenant_id,
            shard_no,
            analyzer,
            rebuilt.n_docs,
        )
        return True

    async def _stored_texts(
        self, tenant_id: int, chunk_ids: list[int], key: DataKey | None
    ) -> dict[int, StoredText]:
        """The stored (opened) text and heading path of these chunks of the tenant."""
        found: dict[int, StoredText] = {}
        async with self.database.read_sessionmaker() as session:
            for start in range(0, len(chunk_ids), 5000):
                rows = await session.execute(
                    select(
                        Chunk.id, Chunk.document_id, Chunk.position, Chunk.text, Chunk.heading_path
                    ).where(
                        Chunk.tenant_id == tenant_id,
                        Chunk.id.in_(chunk_ids[start : start + 5000]),
                    )
                )
                for c in rows:
                    found[c.id] = StoredText(
                        open_chunk_text(key, tenant_id, c.document_id, c.position, c.text),
                        open_chunk_headings(
                            key, tenant_id, c.document_id, c.position, c.heading_path
                        ),
                    )
        return found

    async def _commit(
        self,
        tenant_id: int,
        shard_no: int,
        version: int,
        size: int,
        pending: list[PendingChunk],
        embedder: str,
        dim: int,
    ) -> None:
        chunk_ids = [c.id for c in pending]
        document_ids = sorted({c.document_id for c in pending})
        async with self.database.sessionmaker() as session, session.begin():
            for kind in ("vector", "bm25"):
                await shard_repository.record(
                    session,
                    tenant_id,
                    kind,
                    shard_no,
                    version=version,
                    size=size,
                    embedder=embedder if kind == "vector" else None,
                    dim=dim if kind == "vector" else None,
                )
            for start in range(0, len(chunk_ids), 5000):
                await session.execute(
                    update(Chunk)
                    .where(Chunk.id.in_(chunk_ids[start : start + 5000]))
                    .values(shard_no=shard_no)
                )
            await document_status.mark_ready(session, document_ids)
            # New text to answer from: answers cached before this commit are not found again.
            await versions.bump(session, tenant_id)

    def _check_embedder(self, shards: list[IndexShard], embedder: str, dim: int) -> None:
        for shard in shards:
            if shard.embedder and shard.dim:
                check_compatible(shard.embedder, shard.dim, embedder, dim)

    async def check_embedder(self, tenant_id: int, embedder: Embedder) -> None:
        """Raise EmbedderMismatch when the tenant's vectors come from another model."""
        async with self.database.read_sessionmaker() as session:
            self._check_embedder(
                await shard_repository.vector_shards(session, tenant_id),
                embedder.name,
                embedder.dim,
            )

    async def _reembed(
        self, tenant_id: int, embedder: Embedder, *, heading_context: bool, batch: int = 64
    ) -> None:
        """Replace every stored vector of the tenant with one from `embedder`."""
        last_id = 0
        key, write_key = await self.keys(tenant_id)
        while True:
            async with self.database.read_sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(
                            Chunk.id,
                            Chunk.document_id,
                            Chunk.position,
                            Chunk.text,
                            Chunk.heading_path,
                        )
                        .where(Chunk.tenant_id == tenant_id, Chunk.id > last_id)
                        .order_by(Chunk.id)
                        .limit(batch)
                    )
                ).all()
            if not rows:
                return
            texts = [
                passage_text(
                    open_chunk_text(key, tenant_id, document_id, position, text),
                    json.loads(open_chunk_headings(key, tenant_id, document_id, position, path)),
                    heading_context=heading_context,
                )
                for _, document_id, position, text, path in rows
            ]
            vectors = await asyncio.to_thread(embedder.embed_passages, texts)
            async with self.database.sessionmaker() as session, session.begin():
                for (chunk_id, document_id, position, *_), vector in zip(
                    rows, vectors, strict=True
                ):
                    stored = seal_chunk_vector(
                        write_key, tenant_id, document_id, position, vector.astype("<f4").tobytes()
                    )
                    await session.execute(
                        update(Chunk).where(Chunk.id == chunk_id).values(embedding=stored)
                    )
            last_id = rows[-1][0]

    async def rebuild_tenant(
        self,
        tenant_id: int,
        *,
        embedder: Embedder,
        reembed: bool = False,
        heading_context: bool = False,
    ) -> int:
        """Rewrite the tenant's shards from the chunks stored in the database: with their
        stored vectors, or (`reembed`) with new vectors from `embedder`. BM25 tokens are
        always made anew with the configured tokenizer (this is the re-tokenize path)."""
        async with tenant_index_lock(self.database, self.index_root, tenant_id):
            if reembed:
                await self._reembed(tenant_id, embedder, heading_context=heading_context)
            else:
                # Stored vectors come from the model the shards record; refuse to relabel them.
                await self.check_embedder(tenant_id, embedder)
            name, dim = embedder.name, embedder.dim
            async with self.database.sessionmaker() as session, session.begin():
                floor = await shard_repository.highest_version(session, tenant_id)
                await session.execute(
                    update(Chunk).where(Chunk.tenant_id == tenant_id).values(shard_no=None)
                )
                await shard_repository.forget_tenant(session, tenant_id)
            total = 0
            while True:
                written = await self._flush_step(
                    tenant_id, embedder=name, dim=dim, version_floor=floor or 0
                )
                if written == 0:
                    break
                total += written
            for path in tenant_dir(self.index_root, tenant_id).glob("*-v*.*"):
                if version_of(path) <= (floor or 0):
                    path.unlink(missing_ok=True)
            return total


def heading_path_json(path: tuple[str, ...]) -> str:
    """A heading path as stored on a chunk."""
    return json.dumps(list(path), ensure_ascii=False)
