"""A knowledge base's own BM25 stemmer through the real indexer, shards and retriever: new chunks
are tokenized with it (the open shard is re-tokenized first, never mixed), a rebuild rewrites
shard by shard while searches answer from shards of both stemmers, and another tenant's shards
are left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import select

from app.kit.db import Database
from app.kit.settings import IndexSettings, SearchSettings
from app.knowledge_base.repository import knowledge_base_repository
from app.models import IndexShard
from app.search.index.tokenize import analyzer_id
from app.search.index.writer import Indexer
from app.search.retriever import QueryVector, Retriever, SearchQuery
from app.search.shard_cache import ShardCache
from app.search.visibility import Visibility
from tests.search.corpus import DIM, EMBEDDER, Corpus, DocSpec, add_documents, add_tenant, index

# Two chunks per shard, chunk text only: where each document lands is known.
SETTINGS = IndexSettings(shard_capacity=2, bm25_heading_repeat=0)
ENGLISH, PLAIN = analyzer_id("english", 0), analyzer_id("none", 0)
TRAVEL = "travel bookings go through the office"
GARAGE = "running the staff garage"
HOTEL = "hotel bookings need receipts"
PARKING = "parking runs until noon"
FILLERS = ["unrelated filler note alpha", "unrelated filler note bravo"]


async def choose_stemmer(database: Database, tenant_id: int, stemmer: str) -> None:
    """What `PATCH …/settings {"bm25": {"stemmer": …}}` stores."""
    async with database.sessionmaker() as session, session.begin():
        stored = await knowledge_base_repository.stored(session, tenant_id)
        stored["bm25"]["stemmer"] = stemmer
        await knowledge_base_repository.store(session, tenant_id, stored, user_id=None)


async def build(database: Database, root: Path, slug: str, texts: list[str]) -> int:
    tenant = await add_tenant(database, slug)
    specs = [DocSpec([t]) for t in texts]
    await add_documents(database, Corpus(), tenant, specs, np.random.default_rng(len(slug)))
    await index(database, root, tenant, SETTINGS)
    return tenant


def retriever(database: Database, root: Path) -> Retriever:
    search = SearchSettings(version_poll_seconds=0, max_chunks_per_document=0)
    return Retriever(search, ShardCache(database, root, max_bytes=1 << 30, poll_seconds=0))


async def found(r: Retriever, tenant_id: int, query: str, mode: str = "bm25") -> set[str]:
    vector = QueryVector(np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), EMBEDDER)
    hits = await r.retrieve(
        Visibility.for_tenant(tenant_id),
        SearchQuery(query, mode, 10, vector),  # type: ignore[arg-type]
    )
    return {h.text for h in hits}


async def analyzers(r: Retriever, tenant_id: int) -> list[str]:
    """The analyzer each of the tenant's current BM25 shards records, by shard number."""
    index = await r.cache.get(tenant_id)
    return [s.bm25.analyzer for s in index.shards if s.bm25 is not None]


async def versions(database: Database, tenant_id: int, kind: str) -> list[int]:
    async with database.read_sessionmaker() as session:
        rows = await session.scalars(
            select(IndexShard.version)
            .where(IndexShard.tenant_id == tenant_id, IndexShard.kind == kind)
            .order_by(IndexShard.shard_no)
        )
        return list(rows)


async def test_search_during_a_rebuild_answers_from_shards_of_both_stemmers(
    database: Database, tmp_path: Path
) -> None:
    root = tmp_path / "indexes"
    tenant = await build(database, root, "a", [TRAVEL, GARAGE, HOTEL, PARKING, *FILLERS])
    indexer = Indexer(database, root, SETTINGS)
    r = retriever(database, root)
    assert await analyzers(r, tenant) == [ENGLISH] * 3
    # Stemmed: "booking" finds both "bookings".
    assert await found(r, tenant, "booking") == {TRAVEL, HOTEL}
    vectors_before = await versions(database, tenant, "vector")
    bm25_before = await versions(database, tenant, "bm25")

    await choose_stemmer(database, tenant, "none")
    # The rebuild's first step: shard 0 (travel, garage) now holds unstemmed words.
    assert await indexer.retokenize_bm25(tenant, 0)
    assert await analyzers(r, tenant) == [PLAIN, ENGLISH, ENGLISH]
    # Each shard is asked with its own stemmer: the unstemmed shard no longer matches
    # "booking", the stemmed one still does; "bookings" is found in both.
    assert await found(r, tenant, "booking") == {HOTEL}
    assert await found(r, tenant, "bookings") == {TRAVEL, HOTEL}
    assert await found(r, tenant, "run") == {PARKING}  # stemmed shard 1: "runs" → "run"
    # Hybrid (random test vectors: every chunk is a vector hit) answers too, no
    # tokenizer_mismatch.
    assert {TRAVEL, HOTEL} <= await found(r, tenant, "bookings", "hybrid")

    assert await indexer.retokenize_bm25(tenant, 1)
    assert await indexer.retokenize_bm25(tenant, 2)
    assert not await indexer.retokenize_bm25(tenant, 2)  # already right: left as it is
    assert await analyzers(r, tenant) == [PLAIN] * 3
    assert await found(r, tenant, "booking") == set()
    assert await found(r, tenant, "bookings") == {TRAVEL, HOTEL}
    assert await found(r, tenant, "running") == {GARAGE}
    # Vectors untouched; each BM25 shard one version further, its old file kept for slow
    # readers only.
    assert await versions(database, tenant, "vector") == vectors_before
    assert await versions(database, tenant, "bm25") == [v + 1 for v in bm25_before]
    assert len(await found(r, tenant, "anything at all", "vector")) == 6


async def test_new_chunks_take_the_tenant_stemmer_and_other_tenants_keep_theirs(
    database: Database, tmp_path: Path
) -> None:
    root = tmp_path / "indexes"
    # Shard 0 full (travel, garage), shard 1 open (hotel).
    a = await build(database, root, "a", [TRAVEL, GARAGE, HOTEL])
    b = await build(database, root, "b", [TRAVEL, GARAGE, HOTEL])
    r = retriever(database, root)
    b_versions = await versions(database, b, "bm25")

    await choose_stemmer(database, a, "none")
    await add_documents(database, Corpus(), a, [DocSpec([PARKING])], np.random.default_rng(7))
    # The writer reads the tenant's stemmer under its lock: the open shard is re-tokenized
    # first, then the new chunk added with the same stemmer; the full shard waits for the
    # rebuild job.
    await index(database, root, a, SETTINGS)
    assert await analyzers(r, a) == [ENGLISH, PLAIN]
    assert await found(r, a, "runs") == {PARKING, GARAGE}
    assert await found(r, a, "run") == {GARAGE}  # "runs" was indexed as written
    assert await found(r, a, "booking") == {TRAVEL}

    # Tenant b never chose a stemmer: its shards are the server's, untouched.
    await add_documents(database, Corpus(), b, [DocSpec([PARKING])], np.random.default_rng(8))
    await index(database, root, b, SETTINGS)
    assert await analyzers(r, b) == [ENGLISH, ENGLISH]
    assert (await versions(database, b, "bm25"))[0] == b_versions[0]
    assert await found(r, b, "run") == {GARAGE, PARKING}
    assert await found(r, b, "booking") == {TRAVEL, HOTEL}
