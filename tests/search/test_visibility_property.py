"""Property: over random corpora, users and queries, a search returns only chunks its caller may
see — never another tenant's, never a soft-deleted, not-ready or over-sensitivity document's,
never one a filter excludes — and still fills top_k from what remains, in every mode.

Each example builds a fresh database and shard files (random vectors, real Indexer, several
shards per tenant) and checks retrieval against brute-force oracles: exact BM25Okapi
(rank_bm25) and exact cosine over the visible chunks only, so "filtered after top-k" would
show up as a missing or wrong hit. Roles map to sensitivity levels through the real policy
file, as the search endpoint's Authorizer does; the endpoint's 404/403 for callers without a
searching role is covered in test_search_api.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rank_bm25 import BM25Okapi

from app.kit.authz import SENSITIVITY_LEVELS, TENANT_ROLES, read_policy_file
from app.kit.db import Database
from app.kit.public_ids import IdKind
from app.kit.settings import IndexSettings, SearchSettings
from app.search.index import tokenize
from app.search.retriever import QueryVector, Retriever, SearchQuery
from app.search.schemas import SearchFilters, SearchMode
from app.search.shard_cache import ShardCache
from app.search.visibility import Visibility
from tests.conftest import TEST_SECRET, DatabaseFactory, in_thread
from tests.helpers import public_of
from tests.search.corpus import (
    DIM,
    EMBEDDER,
    EPOCH,
    Corpus,
    DocSpec,
    add_documents,
    add_tenant,
    apply_states,
    index,
)

POLICY = set(read_policy_file())
VOCAB = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
TAGS = ["hr", "finance", "legal"]
MODES: list[SearchMode] = ["hybrid", "bm25", "vector"]


def can_search(role: str | None) -> bool:
    return role is not None and (role, "*", "search", "query") in POLICY


def levels(role: str) -> tuple[str, ...]:
    return tuple(lvl for lvl in SENSITIVITY_LEVELS if (role, "*", "sensitivity", lvl) in POLICY)


texts = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=6).map(" ".join)
doc_specs = st.builds(
    DocSpec,
    texts=st.lists(texts, min_size=1, max_size=3),
    sensitivity=st.sampled_from(SENSITIVITY_LEVELS),
    tags=st.lists(st.sampled_from(TAGS), max_size=2),
    day=st.integers(0, 9),
    deleted=st.sampled_from([False, False, False, True]),
    reprocessing=st.sampled_from([False, False, False, False, True]),
)
filters = st.none() | st.builds(
    SearchFilters,
    tags=st.none() | st.lists(st.sampled_from(TAGS), min_size=1, max_size=2),
    # Ids across every tenant: naming another tenant's document must not surface it.
    document_ids=st.none()
    | st.lists(
        st.integers(1, 40).map(lambda key: public_of(IdKind.DOCUMENT, key)), min_size=1, max_size=8
    ),
    uploaded_after=st.none() | st.integers(0, 9).map(lambda d: EPOCH + timedelta(days=d)),
    uploaded_before=st.none() | st.integers(1, 10).map(lambda d: EPOCH + timedelta(days=d)),
)


@dataclass
class QuerySpec:
    user: int
    tenant: int
    mode: SearchMode
    words: list[str]
    top_k: int
    filters: SearchFilters | None
    seed: int


queries = st.builds(
    QuerySpec,
    user=st.integers(0, 9),
    tenant=st.integers(0, 2),
    mode=st.sampled_from(MODES),
    words=st.lists(st.sampled_from([*VOCAB, "zulu", "the"]), min_size=1, max_size=3),
    top_k=st.integers(1, 12),
    filters=filters,
    seed=st.integers(0, 2**31),
)


@dataclass
class World:
    tenants: list[list[DocSpec]]
    # users[u][t]: the role of user u in tenant t (None: no role there)
    users: list[list[str | None]]
    queries: list[QuerySpec]
    seed: int


worlds = st.builds(
    World,
    tenants=st.lists(st.lists(doc_specs, max_size=6), min_size=2, max_size=3),
    users=st.lists(
        st.lists(st.sampled_from([None, *TENANT_ROLES]), min_size=3, max_size=3),
        min_size=1,
        max_size=4,
    ),
    queries=st.lists(queries, min_size=4, max_size=8),
    seed=st.integers(0, 2**31),
)


def oracle_visible(corpus: Corpus, tenant_id: int, vis: Visibility) -> set[int]:
    """Chunk ids a search under ``vis`` may return, by brute force."""
    visible: set[int] = set()
    for chunk in corpus.chunks.values():
        doc = corpus.docs[chunk.document_id]
        spec = doc.spec
        if doc.tenant_id != tenant_id or spec.deleted or spec.reprocessing:
            continue
        if spec.sensitivity not in vis.sensitivity:
            continue
        if vis.tags and not set(vis.tags) & set(spec.tags):
            continue
        if vis.document_ids is not None and doc.id not in vis.document_ids:
            continue
        if vis.uploaded_after is not None and doc.created_at < vis.uploaded_after:
            continue
        if vis.uploaded_before is not None and doc.created_at >= vis.uploaded_before:
            continue
        visible.add(chunk.id)
    return visible


def bm25_oracle(
    corpus: Corpus, tenant_id: int, visible: set[int], query: str
) -> list[tuple[float, int]]:
    """(score, id) of visible chunks containing a query token, scored over the whole index."""
    indexed = sorted(c.id for c in corpus.chunks.values() if c.tenant_id == tenant_id)
    if not indexed:
        return []
    tokens = [tokenize(corpus.chunks[i].text) for i in indexed]
    scores = BM25Okapi(tokens, k1=1.5, b=0.75, epsilon=0.25).get_scores(tokenize(query))
    query_tokens = set(tokenize(query))
    hits = [
        (float(score), chunk_id)
        for chunk_id, score, chunk_tokens in zip(indexed, scores, tokens, strict=True)
        if chunk_id in visible and query_tokens & set(chunk_tokens)
    ]
    return sorted(hits, key=lambda h: (-h[0], h[1]))


def vector_oracle(corpus: Corpus, visible: set[int], vector: np.ndarray) -> list[float]:
    q = vector / np.linalg.norm(vector)
    return sorted((float(corpus.chunks[i].vector @ q) for i in visible), reverse=True)


async def run_world(world: World, factory: DatabaseFactory, index_root: Path) -> Counter[str]:
    """Build the world, run its queries with checks; returns what the searches covered."""
    rng = np.random.default_rng(world.seed)
    url = await factory.new()
    database = Database(url, session_info={"audit_secret": TEST_SECRET})
    seen: Counter[str] = Counter()
    try:
        corpus = Corpus()
        # Chunk text only (no headings): the oracle is BM25Okapi over the chunks' text.
        index_settings = IndexSettings(shard_capacity=4, bm25_heading_repeat=0)
        for n, specs in enumerate(world.tenants):
            tenant_id = await add_tenant(database, f"t{n}")
            corpus.tenants.append(tenant_id)
            docs = await add_documents(database, corpus, tenant_id, specs, rng)
            await index(database, index_root, tenant_id, index_settings)
            await apply_states(database, docs)
        retriever = Retriever(
            # Candidate depth = top_k, no deepening: a visibility filter applied after the
            # ranking cut instead of inside it would leave top_k unfilled here.
            SearchSettings(
                candidates=1,
                max_candidates=1,
                max_chunks_per_document=0,
                near_duplicate_threshold=0,
                version_poll_seconds=0,
            ),
            ShardCache(database, index_root, max_bytes=1 << 30, poll_seconds=0),
        )
        for spec in world.queries:
            roles = world.users[spec.user % len(world.users)]
            t = spec.tenant % len(corpus.tenants)
            role = roles[t]
            if not can_search(role):
                continue  # the endpoint answers 404/403 before any retrieval
            assert role is not None
            tenant_id = corpus.tenants[t]
            vis = Visibility.for_tenant(tenant_id, levels(role), spec.filters)
            text = " ".join(spec.words)
            vector = np.random.default_rng(spec.seed).standard_normal(DIM).astype(np.float32)
            query = SearchQuery(text, spec.mode, spec.top_k, QueryVector(vector, EMBEDDER))
            hits = await retriever.retrieve(vis, query)
            again = await retriever.retrieve(vis, query)
            visible = oracle_visible(corpus, tenant_id, vis)
            seen["search"] += 1
            seen[f"search {spec.mode}"] += 1
            tenant_chunks = {c.id for c in corpus.chunks.values() if c.tenant_id == tenant_id}
            if hits:
                seen["some hits"] += 1
            if visible != tenant_chunks and hits:
                seen["hits while some tenant chunks are hidden"] += 1
            if len(hits) == spec.top_k and len(visible) > spec.top_k:
                seen["top_k filled with more visible left"] += 1
            context = f"{spec} role={role} tenant={tenant_id}"
            for hit in hits:
                chunk = corpus.chunks[hit.chunk_id]
                # Never another tenant's chunk: the caller has a searching role in the
                # hit's tenant, which is the tenant searched.
                assert chunk.tenant_id == tenant_id, context
                assert can_search(roles[corpus.tenants.index(chunk.tenant_id)]), context
                assert hit.chunk_id in visible, context
                assert hit.document_id == chunk.document_id, context
                assert hit.text == chunk.text, context
            assert len({h.chunk_id for h in hits}) == len(hits), context
            # Deterministic for a fixed index.
            assert [(h.chunk_id, h.score) for h in again] == [
                (h.chunk_id, h.score) for h in hits
            ], context

            if spec.mode == "bm25":
                expected = bm25_oracle(corpus, tenant_id, visible, text)[: spec.top_k]
                assert len(hits) == len(expected), context
                np.testing.assert_allclose(
                    [h.score for h in hits], [s for s, _ in expected], rtol=1e-9, atol=1e-9
                )
            elif spec.mode == "vector":
                expected_scores = vector_oracle(corpus, visible, vector)[: spec.top_k]
                assert len(hits) == len(expected_scores), context
                np.testing.assert_allclose(
                    [h.score for h in hits], expected_scores, rtol=1e-5, atol=1e-5
                )
            else:
                # Vector candidates cover every visible chunk up to the depth (>= top_k).
                assert len(hits) == min(spec.top_k, len(visible)), context
                assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    finally:
        await database.dispose()
        await factory.drop(url)
    return seen


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(world=worlds)
def test_search_returns_only_visible_chunks_and_fills_top_k(
    world: World, sqlite_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    index_root = tmp_path_factory.mktemp("idx")
    # asyncio.run in a thread of its own: this test must not disturb the session loop.
    seen = in_thread(asyncio.run, run_world(world, sqlite_factory, index_root))
    for label in seen:
        event(label)


def test_oracle_sanity() -> None:
    """The BM25 oracle and policy mapping the property relies on behave as the SPEC says."""
    assert levels("guest") == ("public",)
    assert levels("restricted_viewer") == ("public", "internal")
    assert levels("viewer") == SENSITIVITY_LEVELS
    assert not can_search("auditor")
    assert not can_search(None)
    assert all(can_search(r) for r in ("admin", "editor", "viewer", "restricted_viewer", "guest"))
