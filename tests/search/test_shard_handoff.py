"""The in-process indexer hands each new shard version to the shard cache: searches see new
documents the moment they are ready, without reading the shard back from disk, and what they
see is exactly what a load from disk gives (synthetic corpora, no embedding model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from app.kit.db import Database
from app.kit.settings import IndexSettings
from app.models import Document
from app.search.index.writer import Indexer
from app.search.visibility import Visibility
from tests.search.corpus import DIM, EMBEDDER, Corpus, DocSpec, add_documents, add_tenant
from tests.search.test_retriever import make_retriever, query

SMALL_SHARDS = IndexSettings(shard_capacity=3)


async def _flush(indexer: Indexer, tenant: int) -> int:
    return await indexer.flush_tenant(tenant, embedder=EMBEDDER, dim=DIM)


def _texts(hits: list[Any]) -> list[str]:
    return sorted(h.text for h in hits)


async def test_new_versions_are_served_from_memory_and_match_a_load_from_disk(
    database: Database, index_root: Path
) -> None:
    corpus = Corpus()
    rng = np.random.default_rng(5)
    tenant = await add_tenant(database, "t")
    indexer = Indexer(database, index_root, SMALL_SHARDS)
    await add_documents(database, corpus, tenant, [DocSpec(["harbour one"])], rng)
    await _flush(indexer, tenant)
    # A poll interval that never passes in this test: only the hand-off can bring new chunks.
    retriever = make_retriever(database, index_root, version_poll_seconds=3600)
    indexer.readers.append(retriever.cache)
    vis = Visibility.for_tenant(tenant)
    assert _texts(await retriever.retrieve(vis, query("harbour"))) == ["harbour one"]
    loads = retriever.cache.loads

    # Shard 0 grows to its capacity (3), then shard 1 is opened: both handed over.
    more = [DocSpec([f"harbour {w}"]) for w in ("two", "three", "four", "five")]
    await add_documents(database, corpus, tenant, more, rng)
    await _flush(indexer, tenant)
    assert retriever.cache.loads == loads
    assert retriever.cache.handoffs == 2
    expected = ["harbour five", "harbour four", "harbour one", "harbour three", "harbour two"]
    for mode in ("bm25", "vector", "hybrid"):
        served = await retriever.retrieve(vis, query("harbour", mode))
        from_disk = await make_retriever(database, index_root).retrieve(vis, query("harbour", mode))
        assert _texts(served) == expected
        # Same hits, same order, same scores (BM25 statistics included) as loaded from disk.
        assert [(h.chunk_id, h.score) for h in served] == [(h.chunk_id, h.score) for h in from_disk]
    # The versions it serves are the committed ones: a version check changes nothing.
    retriever.cache.poll_seconds = 0
    await retriever.retrieve(vis, query("harbour"))
    assert retriever.cache.loads == loads


async def test_a_tenant_not_yet_searched_is_not_built_by_the_writer(
    database: Database, index_root: Path
) -> None:
    corpus = Corpus()
    tenant = await add_tenant(database, "t")
    indexer = Indexer(database, index_root, SMALL_SHARDS)
    retriever = make_retriever(database, index_root, version_poll_seconds=3600)
    indexer.readers.append(retriever.cache)
    await add_documents(
        database, corpus, tenant, [DocSpec(["quarry one"])], np.random.default_rng(1)
    )
    await _flush(indexer, tenant)
    assert retriever.cache.handoffs == 0
    assert retriever.cache.cached_tenants() == []
    hits = await retriever.retrieve(Visibility.for_tenant(tenant), query("quarry"))
    assert _texts(hits) == ["quarry one"]
    assert retriever.cache.loads == 1


async def test_chunks_handed_over_stay_hidden_until_their_document_is_ready(
    database: Database, index_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = Corpus()
    rng = np.random.default_rng(2)
    tenant = await add_tenant(database, "t")
    indexer = Indexer(database, index_root, IndexSettings())
    await add_documents(database, corpus, tenant, [DocSpec(["lagoon one"])], rng)
    await _flush(indexer, tenant)
    retriever = make_retriever(database, index_root, version_poll_seconds=3600)
    indexer.readers.append(retriever.cache)
    vis = Visibility.for_tenant(tenant)
    await retriever.retrieve(vis, query("lagoon"))

    # The commit that makes the new document ready fails after the hand-off.
    seen_before_commit: list[list[str]] = []
    real_commit = Indexer._commit

    async def failing_commit(self: Indexer, *args: Any, **kwargs: Any) -> None:
        seen_before_commit.append(_texts(await retriever.retrieve(vis, query("lagoon"))))
        raise RuntimeError("disk full")

    monkeypatch.setattr(Indexer, "_commit", failing_commit)
    await add_documents(database, corpus, tenant, [DocSpec(["lagoon two"])], rng)
    with pytest.raises(RuntimeError, match="disk full"):
        await _flush(indexer, tenant)
    # Installed before the commit, but its document was still processing: not shown.
    assert seen_before_commit == [["lagoon one"]]
    # The failed attempt's version is forgotten, not served under a number the retry reuses.
    assert retriever.cache.cached_tenants() == []
    async with database.read_sessionmaker() as session:
        statuses = sorted(await session.scalars(select(Document.status)))
    assert statuses == ["processing", "ready"]

    monkeypatch.setattr(Indexer, "_commit", real_commit)
    await retriever.retrieve(vis, query("lagoon"))  # loads the committed version
    await add_documents(database, corpus, tenant, [DocSpec(["lagoon three"])], rng)
    await _flush(indexer, tenant)
    assert _texts(await retriever.retrieve(vis, query("lagoon"))) == [
        "lagoon one",
        "lagoon three",
        "lagoon two",
    ]
