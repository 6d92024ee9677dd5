"""The per-process cache of tenants' shards: loaded lazily, reloaded on a new version, LRU-capped.

A tenant's shards are loaded on its first search. ``index_shards`` holds the current version
of each shard; at most every ``poll_seconds`` a search checks those versions, and when one
moved (a worker flushed new chunks, a rebuild, a purge) the changed shards are read again —
unchanged ones are reused — and swapped in as one immutable ``TenantIndex``. Searches running
on the previous ``TenantIndex`` keep it alive until they finish; nothing is ever modified
in place, so readers need no lock. Every API process does this on its own, so a worker's new
version reaches all of them within ``poll_seconds`` without a restart.

Memory is capped: the estimated size of every cached tenant is summed and the least recently
searched tenants are dropped until the total fits (the tenant being searched always stays,
even if it alone exceeds the cap).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session as SyncSession

from app.crypto.keyring import Keyring
from app.kit.db import Database
from app.kit.envelope import DataKey, shard_sealer
from app.kit.errors import ServiceUnavailable
from app.models import IndexShard
from app.search.index import (
    BM25Shard,
    CorpusStats,
    ShardError,
    corpus_stats,
    index_ids,
    load_bm25_shard,
    load_shard,
)
from app.search.index.handoff import Install, ShardWrite
from app.search.index.layout import shard_path
from app.search.index.shard_repository import shard_repository
from app.search.repository import search_repository

logger = logging.getLogger(__name__)

IdArray = npt.NDArray[np.int64]
ShardKey = tuple[int, int, int]  # (shard_no, vector version, bm25 version); 0 = no such file

# A version can be replaced twice between reading index_shards and opening its file (the
# indexer keeps one previous version on disk): then read the versions again.
_LOAD_ATTEMPTS = 3
# Estimated bytes per stored id in FAISS id maps / direct maps (two int64 plus hash overhead).
_ID_MAP_BYTES = 24
# Estimated Python overhead per BM25 vocabulary term (str object + dict entry).
_TERM_BYTES = 100


@dataclass(frozen=True, eq=False)
class LoadedShard:
    """One shard's vector index and BM25 postings, with the document of every chunk in it."""

    shard_no: int
    key: ShardKey
    vector: Any | None
    bm25: BM25Shard | None
    chunk_ids: IdArray  # sorted: every id stored in either file
    document_of: IdArray  # aligned with chunk_ids; 0 when the chunk row no longer exists
    documents: IdArray  # sorted distinct values of document_of (0 included when present)
    nbytes: int


@dataclass(frozen=True, eq=False)
class TenantIndex:
    """Everything searchable of one tenant at one set of shard versions."""

    tenant_id: int
    key: tuple[ShardKey, ...]
    shards: tuple[LoadedShard, ...]
    stats: CorpusStats | None  # BM25 statistics over all of the tenant's shards
    embedder: str | None
    dim: int | None

    @property
    def nbytes(self) -> int:
        """Estimated memory held by this tenant's shards."""
        return sum(s.nbytes for s in self.shards)

    @property
    def size(self) -> int:
        """Number of chunks stored in the shards."""
        return sum(int(s.chunk_ids.size) for s in self.shards)


@dataclass
class _Entry:
    index: TenantIndex
    checked_at: float


class _StaleVersion(Exception):
    """A shard file named by index_shards is already gone: read the versions again."""


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _vector_nbytes(path: Path, id_count: int) -> int:
    """Estimated memory of a loaded vector shard."""
    return _file_size(path) + _ID_MAP_BYTES * id_count


def _bm25_nbytes(path: Path, bm25: BM25Shard) -> int:
    """Estimated memory of a loaded BM25 shard."""
    return _file_size(path) + _TERM_BYTES * len(bm25.terms)


def _load_files(
    root: Path,
    tenant_id: int,
    shard_no: int,
    vector_version: int,
    bm25_version: int,
    key: DataKey | None = None,
) -> tuple[Any | None, BM25Shard | None, IdArray, int]:
    """Read one shard's files (blocking; run in a thread); the ids and an estimated size."""
    vector: Any | None = None
    bm25: BM25Shard | None = None
    parts: list[IdArray] = []
    nbytes = 0
    try:
        if vector_version:
            path = shard_path(root, tenant_id, "vector", shard_no, vector_version)
            vector = load_shard(
                path, shard_sealer(key, tenant_id, "vector", shard_no, vector_version)
            )
            ids = index_ids(vector)
            parts.append(ids)
            nbytes += _vector_nbytes(path, int(ids.size))
        if bm25_version:
            path = shard_path(root, tenant_id, "bm25", shard_no, bm25_version)
            bm25 = load_bm25_shard(
                path, shard_sealer(key, tenant_id, "bm25", shard_no, bm25_version)
            )
            parts.append(bm25.ids)
            nbytes += _bm25_nbytes(path, bm25)
    except ShardError as exc:
        # load_shard / load_bm25_shard report a missing or replaced file as a ShardError.
        raise _StaleVersion(str(exc)) from exc
    chunk_ids = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
    return vector, bm25, chunk_ids, nbytes


def _align(chunk_ids: IdArray, db_ids: IdArray, db_documents: IdArray) -> IdArray:
    """The document of each of ``chunk_ids`` (sorted) per the database rows, 0 when absent."""
    if db_ids.size == 0:
        return np.zeros(chunk_ids.size, dtype=np.int64)
    pos = np.searchsorted(db_ids, chunk_ids)
    pos = np.minimum(pos, db_ids.size - 1)
    found = db_ids[pos] == chunk_ids
    document_of: IdArray = np.where(found, db_documents[pos], 0).astype(np.int64, copy=False)
    return document_of


def _loaded(
    key: ShardKey,
    vector: Any | None,
    bm25: BM25Shard | None,
    chunk_ids: IdArray,
    document_of: IdArray,
    nbytes: int,
) -> LoadedShard:
    documents = np.unique(document_of)
    return LoadedShard(
        shard_no=key[0],
        key=key,
        vector=vector,
        bm25=bm25,
        chunk_ids=chunk_ids,
        document_of=document_of,
        documents=documents,
        nbytes=nbytes + chunk_ids.nbytes + document_of.nbytes + documents.nbytes,
    )


class ShardCache:
    """Lazily loaded, version-checked, memory-capped tenant shards for one process."""

    def __init__(
        self,
        database: Database,
        index_root: Path,
        *,
        max_bytes: int,
        poll_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        keyring: Keyring | None = None,
    ) -> None:
        self.database = database
        self.index_root = index_root
        # Opens sealed shard files and chunk text (None: plaintext only).
        self.keyring = keyring
        self.max_bytes = max_bytes
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._locks: dict[int, asyncio.Lock] = {}
        #: shard loads from disk so far (tests and metrics)
        self.loads = 0
        #: shard versions taken from the in-process indexer instead of disk
        self.handoffs = 0

    async def read_key(self, tenant_id: int) -> DataKey | None:
        """The key the tenant's sealed shards and chunk text open with."""
        return await self.keyring.for_reading(tenant_id) if self.keyring else None

    def forget(self, tenant_id: int) -> None:
        """Drop a tenant's cached shards (it was shredded)."""
        self._entries.pop(tenant_id, None)

    @property
    def nbytes(self) -> int:
        """Estimated memory of every cached tenant."""
        return sum(e.index.nbytes for e in self._entries.values())

    def cached_tenants(self) -> list[int]:
        """Tenant ids in the cache, least recently used first."""
        return list(self._entries)

    def invalidate(self, tenant_id: int | None = None) -> None:
        """Forget one tenant (or all): the next search reloads from disk."""
        if tenant_id is None:
            self._entries.clear()
        else:
            self._entries.pop(tenant_id, None)

    async def get(self, tenant_id: int) -> TenantIndex:
        """The tenant's current shards (checking versions at most every poll_seconds)."""
        entry = self._fresh(tenant_id)
        if entry is not None:
            return entry.index
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            # Another search may have refreshed it while this one waited.
            entry = self._fresh(tenant_id)
            if entry is not None:
                return entry.index
            index = await self._refresh(tenant_id)
            self._entries[tenant_id] = _Entry(index, self._clock())
            self._entries.move_to_end(tenant_id)
            self._evict(keep=tenant_id)
            return index

    def _fresh(self, tenant_id: int) -> _Entry | None:
        entry = self._entries.get(tenant_id)
        if entry is None or self._clock() - entry.checked_at >= self.poll_seconds:
            return None
        self._entries.move_to_end(tenant_id)
        return entry

    # The reads below run while the tenant's lock is held, so they must never wait for the
    # async pool that requests hold their sessions in: searches queued on the lock would hold
    # every connection, and the lock holder would wait for one until the pool's timeout —
    # once per queued request (`cairn bench serve` at concurrency 32: each search 30 s, then
    # 500). They go through the synchronous read engine, a separate pool that nothing holds
    # while it waits for this lock.
    def _read_shard_rows(self, tenant_id: int) -> Sequence[IndexShard]:
        with SyncSession(self.database.blocking_read_engine, expire_on_commit=False) as session:
            return shard_repository.shards_blocking(session, tenant_id)

    def _read_chunk_documents(
        self, tenant_id: int, shard_no: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        with self.database.blocking_read_engine.connect() as connection:
            return search_repository.chunk_documents(connection, tenant_id, shard_no)

    async def _refresh(self, tenant_id: int) -> TenantIndex:
        previous = self._entries.get(tenant_id)
        for attempt in range(1, _LOAD_ATTEMPTS + 1):
            rows = await asyncio.to_thread(self._read_shard_rows, tenant_id)
            key = _key(rows)
            if previous is not None and previous.index.key == key:
                return previous.index
            try:
                return await self._load(tenant_id, rows, key, previous)
            except _StaleVersion as exc:
                logger.info("tenant %s: shard changed while loading (%s); retrying", tenant_id, exc)
                if attempt == _LOAD_ATTEMPTS:
                    if previous is not None:
                        # Still safe to serve: visibility is checked against the database
                        # on every search, whatever the age of the shards.
                        logger.warning("tenant %s: serving the previous shard versions", tenant_id)
                        return previous.index
                    raise ServiceUnavailable(
                        "The search index is being rewritten; try again shortly",
                        code="index_unavailable",
                    ) from exc
        raise AssertionError("unreachable")

    async def _load(
        self,
        tenant_id: int,
        rows: Sequence[IndexShard],
        key: tuple[ShardKey, ...],
        previous: _Entry | None,
    ) -> TenantIndex:
        reusable = {s.key: s for s in previous.index.shards} if previous else {}
        shards: list[LoadedShard] = []
        for shard_key in key:
            shard = reusable.get(shard_key)
            if shard is None:
                shard = await self._load_shard(tenant_id, shard_key)
            shards.append(shard)
        bm25_shards = [s.bm25 for s in shards if s.bm25 is not None]
        stats = await asyncio.to_thread(corpus_stats, bm25_shards) if bm25_shards else None
        vector_rows = [r for r in rows if r.kind == "vector" and r.embedder]
        return TenantIndex(
            tenant_id=tenant_id,
            key=key,
            shards=tuple(shards),
            stats=stats,
            embedder=vector_rows[0].embedder if vector_rows else None,
            dim=vector_rows[0].dim if vector_rows else None,
        )

    async def _load_shard(self, tenant_id: int, key: ShardKey) -> LoadedShard:
        shard_no, vector_version, bm25_version = key
        data_key = await self.read_key(tenant_id)
        vector, bm25, chunk_ids, nbytes = await asyncio.to_thread(
            _load_files,
            self.index_root,
            tenant_id,
            shard_no,
            vector_version,
            bm25_version,
            data_key,
        )
        # Read after the files: every chunk in them was committed with its shard_no before
        # the version naming them, so the map covers them all (chunks flushed since are extra
        # and harmless; chunks purged since map to 0, never visible).
        db_ids, db_documents = await asyncio.to_thread(
            self._read_chunk_documents, tenant_id, shard_no
        )
        self.loads += 1
        return _loaded(
            key, vector, bm25, chunk_ids, _align(chunk_ids, db_ids, db_documents), nbytes
        )

    # The in-process indexer's hand-off (app/search/index/handoff.py): during a bulk import the
    # open shard is rewritten every few seconds, and reading it back inside a search held that
    # search, and every one queued behind the tenant's lock, for as long as the load took.
    def prepare(self, write: ShardWrite) -> Install | None:
        """The tenant's index with ``write`` in place of the version it was built on (blocking:
        on the writer's thread), or None when this cache does not serve that version."""
        entry = self._entries.get(write.tenant_id)
        if entry is None:
            return None  # not searched yet: the first search loads it
        base = entry.index
        old = next((s for s in base.shards if s.shard_no == write.shard_no), None)
        if write.base_versions == (0, 0):
            if old is not None:
                return None  # a rebuild reusing shard numbers: load as usual
        elif old is None or old.key != (write.shard_no, *write.base_versions):
            return None
        key = (write.shard_no, write.version, write.version)
        chunk_ids = np.unique(np.concatenate([index_ids(write.vector), write.bm25.ids]))
        known_ids = write.added_ids
        known_documents = write.added_documents
        if old is not None:
            known_ids = np.concatenate([old.chunk_ids, known_ids])
            known_documents = np.concatenate([old.document_of, known_documents])
        order = np.argsort(known_ids, kind="stable")
        shard = _loaded(
            key,
            write.vector,
            write.bm25,
            chunk_ids,
            _align(chunk_ids, known_ids[order], known_documents[order]),
            _vector_nbytes(write.paths[0], int(write.vector.ntotal))
            + _bm25_nbytes(write.paths[1], write.bm25),
        )
        shards = sorted(
            [s for s in base.shards if s.shard_no != write.shard_no] + [shard],
            key=lambda s: s.shard_no,
        )
        bm25_shards = [s.bm25 for s in shards if s.bm25 is not None]
        index = dataclasses.replace(
            base,
            key=tuple(s.key for s in shards),
            shards=tuple(shards),
            stats=corpus_stats(bm25_shards) if bm25_shards else None,
        )

        def install() -> None:
            current = self._entries.get(write.tenant_id)
            if current is None or current.index is not base:
                return  # reloaded or evicted meanwhile: the next search checks versions
            # The versions are the database's as soon as the writer commits; the documents
            # become ready only then, so searches see their chunks from that moment on.
            self._entries[write.tenant_id] = _Entry(index, self._clock())
            self.handoffs += 1
            self._evict(keep=write.tenant_id)

        return install

    def _evict(self, *, keep: int) -> None:
        for tenant_id in list(self._entries):
            if self.nbytes <= self.max_bytes:
                return
            if tenant_id != keep:
                logger.info("shard cache: evicting tenant %s", tenant_id)
                del self._entries[tenant_id]


def _key(rows: Sequence[IndexShard]) -> tuple[ShardKey, ...]:
    """(shard_no, vector version, bm25 version) per shard, by shard number."""
    versions: dict[int, list[int]] = {}
    for row in rows:
        slot = versions.setdefault(row.shard_no, [0, 0])
        slot[0 if row.kind == "vector" else 1] = row.version
    return tuple((no, v, b) for no, (v, b) in sorted(versions.items()))
