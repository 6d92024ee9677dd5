"""The retriever and its shard cache without HTTP: depth, de-duplication, reranking, version
pickup, LRU eviction and immediate soft deletes (synthetic corpora, no embedding model)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from app.kit.db import Database
from app.kit.errors import ServiceUnavailable
from app.kit.settings import IndexSettings, RerankSettings, SearchSettings
from app.models import Document
from app.search.rerank import RerankerUnavailable, load_reranker
from app.search.retriever import QueryVector, Retriever, SearchQuery
from app.search.shard_cache import ShardCache
from app.search.visibility import Visibility
from tests.search.corpus import (
    DIM,
    EMBEDDER,
    Corpus,
    DocSpec,
    add_documents,
    add_tenant,
    index,
)

SMALL_SHARDS = IndexSettings(shard_capacity=3)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_retriever(
    database: Database,
    index_root: Path,
    clock: Clock | None = None,
    reranker: Any = None,
    **overrides: Any,
) -> Retriever:
    settings = SearchSettings(**overrides)
    cache = ShardCache(
        database,
        index_root,
        max_bytes=settings.cache_max_mb * 1024 * 1024,
        poll_seconds=settings.version_poll_seconds,
        clock=clock or Clock(),
    )
    return Retriever(settings, cache, reranker=reranker)


def query(text: str, mode: str = "bm25", top_k: int = 10, seed: int = 0) -> SearchQuery:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return SearchQuery(text, mode, top_k, QueryVector(vector, EMBEDDER))  # type: ignore[arg-type]


async def tenant_with(
    database: Database, index_root: Path, corpus: Corpus, slug: str, specs: Sequence[DocSpec]
) -> int:
    tenant_id = await add_tenant(database, slug)
    await add_documents(database, corpus, tenant_id, list(specs), np.random.default_rng(7))
    await index(database, index_root, tenant_id, SMALL_SHARDS)
    return tenant_id


async def test_duplicates_and_capped_documents_do_not_starve_top_k(
    database: Database, index_root: Path
) -> None:
    corpus = Corpus()
    # Ten copies of one paragraph rank first; distinct chunks lie deeper than the initial
    # candidate depth, so the retriever must look deeper to fill top_k.
    dup = "vacation vacation vacation policy"
    specs = [DocSpec([dup]) for _ in range(10)]
    specs += [DocSpec([f"vacation note {word}"]) for word in ("alpha", "bravo", "charlie")]
    specs.append(DocSpec([f"vacation rule {n} words" for n in ("one", "two", "three", "four")]))
    tenant = await tenant_with(database, index_root, corpus, "t", specs)
    retriever = make_retriever(
        database, index_root, candidates=2, max_candidates=100, max_chunks_per_document=2
    )
    hits = await retriever.retrieve(Visibility.for_tenant(tenant), query("vacation"))
    texts = [h.text for h in hits]
    assert texts.count(dup) == 1
    per_doc: dict[int, int] = {}
    for h in hits:
        per_doc[h.document_id] = per_doc.get(h.document_id, 0) + 1
    # 1 duplicate group + 3 notes + 4 rules of one document, 2 of them held back by the cap
    # and then backfilled because nothing else is left.
    assert len(hits) == 8
    five = await retriever.retrieve(Visibility.for_tenant(tenant), query("vacation", top_k=6))
    assert (
        max(sum(1 for h in five if h.document_id == d) for d in {h.document_id for h in five}) <= 2
    )
    assert len(five) == 6


async def test_a_long_single_document_still_fills_top_k(
    database: Database, index_root: Path
) -> None:
    corpus = Corpus()
    texts = [f"handbook section {w}" for w in ("alpha", "bravo", "charlie", "delta", "echo")]
    tenant = await tenant_with(database, index_root, corpus, "t", [DocSpec(texts)])
    retriever = make_retriever(database, index_root, max_chunks_per_document=2)
    for mode in ("bm25", "vector", "hybrid"):
        hits = await retriever.retrieve(
            Visibility.for_tenant(tenant), query("handbook", mode, top_k=5)
        )
        assert len(hits) == 5, mode


async def test_weighted_fusion_is_configuration(database: Database, index_root: Path) -> None:
    corpus = Corpus()
    specs = [DocSpec([f"budget {w} plan"]) for w in ("alpha", "bravo", "charlie", "delta")]
    tenant = await tenant_with(database, index_root, corpus, "t", specs)
    vis = Visibility.for_tenant(tenant)
    rrf = make_retriever(database, index_root, fusion="rrf")
    weighted = make_retriever(database, index_root, fusion="weighted", bm25_weight=0.0)
    vector_only = make_retriever(database, index_root)
    rrf_hits = await rrf.retrieve(vis, query("budget alpha", "hybrid"))
    weighted_hits = await weighted.retrieve(vis, query("budget alpha", "hybrid"))
    vector_hits = await vector_only.retrieve(vis, query("budget alpha", "vector"))
    # BM25 weighted 0: the order is the vector order, scores in [0, 1].
    assert [h.chunk_id for h in weighted_hits] == [h.chunk_id for h in vector_hits]
    assert all(0.0 <= h.score <= 1.0 for h in weighted_hits)
    # RRF scores are sums of 1 / (60 + rank).
    assert all(h.score <= 2 / 61 + 1e-12 for h in rrf_hits)


async def test_reranker_hook_reorders_the_best_candidates(
    database: Database, index_root: Path
) -> None:
    corpus = Corpus()
    specs = [DocSpec([f"travel {w}"]) for w in ("alpha", "bravo", "charlie", "delta")]
    tenant = await tenant_with(database, index_root, corpus, "t", specs)

    class ByLength:
        name = "by-length"

        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def rerank(self, query: str, passages: Sequence[str]) -> list[float]:
            self.calls.append((query, len(passages)))
            # Prefers "charlie" over everything, then longer text.
            return [100.0 if "charlie" in p else float(len(p)) for p in passages]

    reranker = ByLength()
    retriever = make_retriever(database, index_root, reranker=reranker)
    hits = await retriever.retrieve(Visibility.for_tenant(tenant), query("travel", top_k=2))
    assert reranker.calls == [("travel", 4)]  # every candidate up to the rerank depth
    assert hits[0].text == "travel charlie"
    assert hits[0].score == 100.0
    assert len(hits) == 2


async def test_new_shard_versions_are_picked_up_after_the_poll_interval(
    database: Database, index_root: Path
) -> None:
    corpus = Corpus()
    tenant = await tenant_with(database, index_root, corpus, "t", [DocSpec(["river one"])])
    clock = Clock()
    retriever = make_retriever(database, index_root, clock, version_poll_seconds=5)
    vis = Visibility.for_tenant(tenant)
    assert len(await retriever.retrieve(vis, query("river"))) == 1
    loads = retriever.cache.loads

    # A worker indexes more chunks: new shard files and versions.
    more = [DocSpec([f"river {w}"]) for w in ("two", "three", "four", "five")]
    await add_documents(database, corpus, tenant, more, np.random.default_rng(1))
    await index(database, index_root, tenant, SMALL_SHARDS)
    clock.now += 1
    assert len(await retriever.retrieve(vis, query("river"))) == 1  # cached
    clock.now += 5
    assert len(await retriever.retrieve(vis, query("river"))) == 5
    # Shard 0 grew (3 chunks), shard 1 is new: both loaded; nothing else.
    assert retriever.cache.loads == loads + 2
    clock.now += 10
    await retriever.retrieve(vis, query("river"))
    assert retriever.cache.loads == loads + 2  # versions unchanged: nothing reloaded


async def test_without_a_poll_interval_every_search_sees_the_newest_shards(
    database: Database, index_root: Path
) -> None:
    corpus = Corpus()
    tenant = await tenant_with(database, index_root, corpus, "t", [DocSpec(["meadow one"])])
    retriever = make_retriever(database, index_root, version_poll_seconds=0)
    vis = Visibility.for_tenant(tenant)
    assert len(await retriever.retrieve(vis, query("meadow"))) == 1
    await add_documents(
        database, corpus, tenant, [DocSpec(["meadow two"])], np.random.default_rng(3)
    )
    await index(database, index_root, tenant, SMALL_SHARDS)
    assert len(await retriever.retrieve(vis, query("meadow"))) == 2


async def test_soft_delete_counts_at_once_and_top_k_is_refilled(
    database: Database, index_root: Path
) -> None:
    corpus = Corpus()
    specs = [DocSpec([f"safety {w}"]) for w in ("alpha", "bravo", "charlie", "delta")]
    tenant = await tenant_with(database, index_root, corpus, "t", specs)
    # A long poll interval: the cached shards still hold the deleted document's chunks.
    retriever = make_retriever(database, index_root, version_poll_seconds=3600)
    vis = Visibility.for_tenant(tenant)
    for mode in ("bm25", "vector", "hybrid"):
        before = await retriever.retrieve(vis, query("safety", mode, top_k=3))
        assert len(before) == 3
        victim = before[0].document_id
        async with database.sessionmaker() as session, session.begin():
            await session.execute(
                update(Document).where(Document.id == victim).values(deleted_at=Document.created_at)
            )
        after = await retriever.retrieve(vis, query("safety", mode, top_k=3))
        assert victim not in {h.document_id for h in after}
        assert len(after) == 3
        async with database.sessionmaker() as session, session.begin():
            await session.execute(
                update(Document).where(Document.id == victim).values(deleted_at=None)
            )


async def test_cache_evicts_least_recently_used_tenants(
    database: Database, index_root: Path
) -> None:
    corpus = Corpus()
    tenants = [
        await tenant_with(database, index_root, corpus, f"t{n}", [DocSpec([f"shared {n}"])])
        for n in range(3)
    ]
    retriever = make_retriever(database, index_root)
    cache = retriever.cache
    for tenant in tenants:
        await retriever.retrieve(Visibility.for_tenant(tenant), query("shared"))
    assert cache.cached_tenants() == tenants
    one_tenant = cache.nbytes // 3
    cache.max_bytes = 2 * one_tenant + one_tenant // 2
    await retriever.retrieve(Visibility.for_tenant(tenants[0]), query("shared"))
    await retriever.retrieve(Visibility.for_tenant(tenants[2]), query("shared"))
    cache.invalidate(tenants[2])
    await retriever.retrieve(Visibility.for_tenant(tenants[2]), query("shared"))
    # Reloading tenant 2 pushed the total over the cap: tenant 1, least recently used, went.
    assert cache.cached_tenants() == [tenants[0], tenants[2]]
    # A tenant larger than the whole cap is still served (and is the only one kept).
    cache.max_bytes = 1
    hits = await retriever.retrieve(Visibility.for_tenant(tenants[1]), query("shared"))
    assert [h.text for h in hits] == ["shared 1"]
    assert cache.cached_tenants() == [tenants[1]]


async def test_embedder_mismatch_is_a_clear_error(database: Database, index_root: Path) -> None:
    corpus = Corpus()
    tenant = await tenant_with(database, index_root, corpus, "t", [DocSpec(["x ray"])])
    retriever = make_retriever(database, index_root)
    vis = Visibility.for_tenant(tenant)
    other_model = SearchQuery(
        "x ray", "vector", 5, QueryVector(np.ones(DIM, dtype=np.float32), "other:model")
    )
    with pytest.raises(ServiceUnavailable) as info:
        await retriever.retrieve(vis, other_model)
    assert info.value.code == "embedder_mismatch"
    wrong_dim = SearchQuery("x ray", "vector", 5, QueryVector(np.ones(3, dtype=np.float32)))
    with pytest.raises(ServiceUnavailable):
        await retriever.retrieve(vis, wrong_dim)
    # BM25 needs no vector at all.
    assert len(await retriever.retrieve(vis, SearchQuery("x ray", "bm25", 5))) == 1
    with pytest.raises(ValueError, match="needs a query vector"):
        await retriever.retrieve(vis, SearchQuery("x ray", "hybrid", 5))


async def test_empty_tenant_and_nothing_visible(database: Database, index_root: Path) -> None:
    corpus = Corpus()
    empty = await add_tenant(database, "empty")
    tenant = await tenant_with(
        database, index_root, corpus, "t", [DocSpec(["quiet lake"], sensitivity="confidential")]
    )
    retriever = make_retriever(database, index_root)
    for mode in ("bm25", "vector", "hybrid"):
        assert await retriever.retrieve(Visibility.for_tenant(empty), query("lake", mode)) == []
        guest = Visibility.for_tenant(tenant, ("public",))
        assert await retriever.retrieve(guest, query("lake", mode)) == []


def test_reranker_is_configuration_and_none_ships(tmp_path: Path) -> None:
    assert load_reranker(RerankSettings()) is None
    with pytest.raises(ValueError, match="model_path is required"):
        RerankSettings(backend="cross-encoder")
    missing = RerankSettings(backend="cross-encoder", model_path=str(tmp_path / "absent"))
    with pytest.raises(RerankerUnavailable, match="not a local cross-encoder"):
        load_reranker(missing)
