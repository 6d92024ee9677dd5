"""Taking chunks out of a tenant's shards for good: every version on disk, not only the current.

A shard is append-only between rewrites, so older versions of a shard hold subsets of what
later ones hold — including, after a purge, the purged chunks. `remove_chunks` therefore
rewrites the current version of every shard that holds any of the chunks (a new version,
recorded in `index_shards` like an index flush) and deletes every other file of the tenant
that holds one. Readers that already loaded an old version keep it in memory until they
notice the new version; a file is never left for them.

Runs under the tenant's index writer lock, so no flush appends to a shard meanwhile.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.db import Database
from app.kit.envelope import DataKey, ObjectSealer, shard_sealer
from app.search.index import (
    CorpusStats,
    corpus_stats,
    index_ids,
    load_bm25_shard,
    load_shard,
    remove_bm25_ids,
    remove_vector_ids,
    save_bm25_shard,
    save_shard,
    search_bm25,
    search_shard,
    shard_size,
)
from app.search.index.layout import ShardKind, shard_path, tenant_dir, version_of
from app.search.index.locks import tenant_index_lock
from app.search.index.shard_repository import shard_repository

logger = logging.getLogger(__name__)

IdArray = npt.NDArray[np.int64]
# Called inside the transaction that commits a step, with what the step removed: a worker
# killed between steps leaves counts that match what was really done.
Recorder = Callable[[AsyncSession, dict[str, int]], Awaitable[None]]
_SHARD_FILE = re.compile(r"^(vector|bm25)-(\d{4})-v(\d{8})\.(faiss|bm25\.npz)$")


@dataclass
class Removal:
    """What taking chunks out of the shards did."""

    vectors: int = 0
    postings: int = 0
    shard_versions_rewritten: int = 0
    shard_versions_deleted: int = 0
    rewritten: list[tuple[str, int, int]] = field(default_factory=list)  # kind, shard, version


@dataclass(frozen=True)
class ShardFile:
    path: Path
    kind: ShardKind
    shard_no: int
    version: int


def shard_files(index_root: Path, tenant_id: int) -> list[ShardFile]:
    """Every shard file of the tenant on disk, any version."""
    folder = tenant_dir(index_root, tenant_id)
    if not folder.exists():
        return []
    found: list[ShardFile] = []
    for path in sorted(folder.iterdir()):
        match = _SHARD_FILE.match(path.name)
        if match:
            kind: ShardKind = "vector" if match.group(1) == "vector" else "bm25"
            found.append(ShardFile(path, kind, int(match.group(2)), version_of(path)))
    return found


def _sealer(
    key: DataKey | None, tenant_id: int, shard: ShardFile, version: int | None = None
) -> ObjectSealer | None:
    return shard_sealer(
        key, tenant_id, shard.kind, shard.shard_no, shard.version if version is None else version
    )


def ids_in_file(shard: ShardFile, tenant_id: int = 0, key: DataKey | None = None) -> IdArray:
    """The chunk ids a shard file holds (a sealed file opened with the tenant's `key`)."""
    sealer = _sealer(key, tenant_id, shard)
    if shard.kind == "vector":
        return index_ids(load_shard(shard.path, sealer))
    return load_bm25_shard(shard.path, sealer).ids


def files_holding(
    index_root: Path, tenant_id: int, chunk_ids: IdArray, key: DataKey | None = None
) -> list[Path]:
    """Shard files (any version) that still hold one of the chunks."""
    return [
        shard.path
        for shard in shard_files(index_root, tenant_id)
        if np.isin(ids_in_file(shard, tenant_id, key), chunk_ids).any()
    ]


async def remove_chunks(
    database: Database,
    index_root: Path,
    tenant_id: int,
    chunk_ids: IdArray,
    record: Recorder | None = None,
    keys: tuple[DataKey | None, DataKey | None] = (None, None),
) -> Removal:
    """Take the chunks out of every shard file of the tenant (see the module docstring).
    `keys`: (the key shard files open with, the key rewritten versions are sealed with)."""
    if chunk_ids.size == 0:
        return Removal()
    async with tenant_index_lock(database, index_root, tenant_id):
        return await remove_chunks_locked(database, index_root, tenant_id, chunk_ids, record, keys)


async def remove_chunks_locked(
    database: Database,
    index_root: Path,
    tenant_id: int,
    chunk_ids: IdArray,
    record: Recorder | None = None,
    keys: tuple[DataKey | None, DataKey | None] = (None, None),
) -> Removal:
    """`remove_chunks` for a caller that already holds the tenant's index writer lock."""
    removal = Removal()
    if chunk_ids.size == 0:
        return removal
    async with database.read_sessionmaker() as session:
        current = await shard_repository.versions(session, tenant_id)
    for shard in shard_files(index_root, tenant_id):
        holds = np.isin(ids_in_file(shard, tenant_id, keys[0]), chunk_ids)
        if not holds.any():
            continue
        if current.get((shard.kind, shard.shard_no)) == shard.version:
            await _rewrite(database, index_root, tenant_id, shard, chunk_ids, removal, record, keys)
        else:
            shard.path.unlink(missing_ok=True)
            removal.shard_versions_deleted += 1
            if record is not None:
                async with database.sessionmaker() as session, session.begin():
                    await record(session, {"shard_versions_deleted": 1})
    return removal


async def _rewrite(
    database: Database,
    index_root: Path,
    tenant_id: int,
    shard: ShardFile,
    chunk_ids: IdArray,
    removal: Removal,
    record: Recorder | None,
    keys: tuple[DataKey | None, DataKey | None] = (None, None),
) -> None:
    """Write the shard's next version without the chunks, record it, drop the old file."""
    version = shard.version + 1
    target = shard_path(index_root, tenant_id, shard.kind, shard.shard_no, version)
    if shard.kind == "vector":
        index = load_shard(shard.path, _sealer(keys[0], tenant_id, shard))
        counts = {"vectors": remove_vector_ids(index, chunk_ids)}
        save_shard(index, target, _sealer(keys[1], tenant_id, shard, version))
        size = shard_size(index)
    else:
        bm25 = load_bm25_shard(shard.path, _sealer(keys[0], tenant_id, shard))
        smaller = remove_bm25_ids(bm25, chunk_ids)
        counts = {"postings": bm25.n_docs - smaller.n_docs}
        save_bm25_shard(smaller, target, _sealer(keys[1], tenant_id, shard, version))
        size = smaller.n_docs
    counts["shard_versions_rewritten"] = 1
    removal.vectors += counts.get("vectors", 0)
    removal.postings += counts.get("postings", 0)
    async with database.sessionmaker() as session, session.begin():
        await shard_repository.record(
            session, tenant_id, shard.kind, shard.shard_no, version=version, size=size, create=False
        )
        if record is not None:
            await record(session, counts)
    # Only after the new version is committed: until then readers still need this file.
    shard.path.unlink(missing_ok=True)
    removal.shard_versions_rewritten += 1
    removal.rewritten.append((shard.kind, shard.shard_no, version))


@dataclass(frozen=True)
class Surfaced:
    """Chunk ids that queries over the current shards still return."""

    by_terms: list[int]
    by_vectors: list[int]


def query_current_shards(
    index_root: Path,
    tenant_id: int,
    current: dict[tuple[str, int], int],
    chunk_ids: IdArray,
    terms: list[str],
    vectors: npt.NDArray[np.float32],
    k: int = 20,
    key: DataKey | None = None,
) -> Surfaced:
    """Ask the tenant's current shards, with no visibility filter at all, for the chunks' own
    terms (BM25) and their own vectors (FAISS); which of the chunks come back."""
    by_terms: set[int] = set()
    by_vectors: set[int] = set()
    bm25_shards = [
        load_bm25_shard(
            shard_path(index_root, tenant_id, "bm25", no, version),
            shard_sealer(key, tenant_id, "bm25", no, version),
        )
        for (kind, no), version in current.items()
        if kind == "bm25" and version > 0
    ]
    stats: CorpusStats | None = corpus_stats(bm25_shards) if bm25_shards else None
    for bm25 in bm25_shards:
        if terms and stats is not None and bm25.n_docs:
            # Every document holding any of the terms, not a top-k: nothing may hide below it.
            _, ids = search_bm25(bm25, stats, terms, k=max(k, bm25.n_docs))
            by_terms.update(int(i) for i in np.intersect1d(ids, chunk_ids))
    for (kind, no), version in current.items():
        if kind != "vector" or version <= 0 or vectors.size == 0:
            continue
        index = load_shard(
            shard_path(index_root, tenant_id, "vector", no, version),
            shard_sealer(key, tenant_id, "vector", no, version),
        )
        _, ids = search_shard(index, vectors, k=k)
        found = np.intersect1d(ids.ravel(), chunk_ids)
        by_vectors.update(int(i) for i in found)
    return Surfaced(sorted(by_terms), sorted(by_vectors))


async def compact_shards(database: Database, index_root: Path) -> int:
    """Delete shard files older than the version before each shard's current one (what index
    flushes leave for slow readers, and what crashes leave behind), tenant by tenant under the
    writer lock; how many files were deleted."""
    async with database.read_sessionmaker() as session:
        current = await shard_repository.all_versions(session)
    deleted = 0
    for tenant_id, versions in current.items():
        async with tenant_index_lock(database, index_root, tenant_id):
            for shard in shard_files(index_root, tenant_id):
                latest = versions.get((shard.kind, shard.shard_no))
                if latest is not None and shard.version < latest - 1:
                    shard.path.unlink(missing_ok=True)
                    deleted += 1
    return deleted
