"""Hybrid retrieval over one tenant's shards: visibility mask → BM25 and vector candidates →
fusion → de-duplication → optional reranking.

``Retriever.retrieve`` is the whole search without HTTP: it takes a tenant's ``Visibility``
and a query (text, and a vector for the vector and hybrid modes) and returns ranked hits. The
query embedding is a separate step (``embed_query``) so evaluation and benchmarks can time it
apart or pass vectors they computed in bulk.

Ordering rules that keep it correct:

* The visible (or, unfiltered, the hidden) documents are read from the database on every
  call and turned into allowed chunk ids per shard; FAISS (``IDSelector``) and BM25 skip
  every other chunk while they score, so the candidate lists are filled from visible chunks
  only and no count or ranking cut ever involves an invisible one.
* Hit texts and titles are fetched through the same visibility statement again, so a
  document deleted during the search is dropped rather than shown.
* Results are deterministic for a fixed index: every ranking breaks ties by chunk id.

Latency: everything after the shard lookup runs in one worker thread, the database reads
included, over the database's synchronous read engine (``Database.blocking_read_engine``):
through the async drivers each statement took several event-loop round trips, which had been
most of the service's time beyond the raw FAISS and BM25 calls (`cairn bench search`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sqlalchemy.engine import Connection

from app.cache.store import CacheStore
from app.crypto.keyring import Keyring
from app.kit.db import Database
from app.kit.envelope import DataKey
from app.kit.errors import ServiceUnavailable
from app.kit.metrics import EMBEDDING_SECONDS, SEARCH_SECONDS
from app.kit.settings import EmbeddingConfig, SearchSettings, Settings
from app.search.dedupe import Candidate, Deduplicator
from app.search.embedding_cache import QueryEmbeddingCache
from app.search.fusion import Ranking, fuse
from app.search.index import (
    merge_results,
    query_stemmer,
    search_bm25,
    search_shard,
    tokenize,
)
from app.search.index.tokenize import StemmerName
from app.search.repository import search_repository
from app.search.rerank import Reranker, load_reranker
from app.search.schemas import SearchMode
from app.search.shard_cache import LoadedShard, ShardCache, TenantIndex
from app.search.visibility import (
    IdArray,
    Visibility,
    allowed_ids,
    allowed_ids_except,
    present,
)
from ingest.embedding import load_embedder

FloatVector = npt.NDArray[np.float32]

_EMPTY: tuple[npt.NDArray[np.float64], IdArray] = (
    np.empty(0, dtype=np.float64),
    np.empty(0, dtype=np.int64),
)


@dataclass(frozen=True)
class QueryVector:
    """An embedded query and the model that produced it (checked against the index)."""

    vector: FloatVector
    embedder: str | None = None


@dataclass(frozen=True)
class SearchQuery:
    text: str
    mode: SearchMode = "hybrid"
    top_k: int = 10
    # Needed by the vector and hybrid modes; see Retriever.embed_query.
    vector: QueryVector | None = None
    # (BM25, vector) fusion weights instead of the configured ones (a knowledge base's own).
    weights: tuple[float, float] | None = None
    # Hits scoring below this are dropped (None: none are).
    min_score: float | None = None

    @property
    def uses_vectors(self) -> bool:
        return self.mode != "bm25"

    @property
    def uses_bm25(self) -> bool:
        return self.mode != "vector"


@dataclass(frozen=True)
class _Masked:
    shard: LoadedShard
    allowed: IdArray | None  # None: every chunk of the shard is visible
    # Disabled (or staged) chunks of this shard, dropped from its results: asking for k more
    # and filtering is exact and, for the few a curator switches off, far cheaper than an
    # allow-list of every other chunk inside FAISS.
    dropped: IdArray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # The query's BM25 tokens for this shard, made with the stemmer its analyzer records.
    tokens: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Prepared:
    masked: list[_Masked]  # shards with at least one visible chunk


@dataclass(frozen=True)
class _Candidates:
    rankings: list[Ranking]
    weights: list[float]
    # No retriever could have returned more than it did at this depth.
    exhausted: bool


class Retriever:
    """One per process: the shard cache, the configured fusion and the optional reranker."""

    def __init__(
        self,
        settings: SearchSettings,
        cache: ShardCache,
        *,
        embedding: EmbeddingConfig | None = None,
        reranker: Reranker | None = None,
        query_cache: QueryEmbeddingCache | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.query_cache = query_cache
        self.embedding = embedding or EmbeddingConfig()
        self.reranker = reranker
        # The shard cache's database: the reads of a search are made in its worker thread.
        self.engine = cache.database.blocking_read_engine

    @classmethod
    def create(
        cls,
        database: Database,
        settings: Settings,
        *,
        store: CacheStore | None = None,
        keyring: Keyring | None = None,
    ) -> Retriever:
        """The retriever for an API process, CLI command or benchmark; with a cache `store`,
        query embeddings are cached there (when `cache.query_embeddings` is on)."""
        cache = ShardCache(
            database,
            settings.index_dir,
            max_bytes=settings.search.cache_max_mb * 1024 * 1024,
            poll_seconds=settings.search.version_poll_seconds,
            # The process's keyring (its container's, app/container.py) when given, else one
            # of its own.
            keyring=keyring or Keyring(database, settings.encryption),
        )
        return cls(
            settings.search,
            cache,
            embedding=settings.embedding,
            reranker=load_reranker(settings.search.rerank),
            query_cache=QueryEmbeddingCache(
                store, settings.embedding, ttl=settings.cache.query_embedding_ttl_seconds
            )
            if store is not None and settings.cache.query_embeddings
            else None,
        )

    async def embed_query(self, text: str, *, tenant_id: int | None = None) -> QueryVector:
        """The query's vector from the configured embedder (loaded once per process). With a
        tenant, through that tenant's part of the query-embedding cache."""
        cache = self.query_cache if tenant_id is not None else None
        if cache is not None and tenant_id is not None:
            found = await cache.get(tenant_id, text)
            if found is not None:
                return QueryVector(*found)
        started = time.perf_counter()
        vector = await asyncio.to_thread(self._embed, text)
        EMBEDDING_SECONDS.observe(time.perf_counter() - started)
        if cache is not None and tenant_id is not None:
            await cache.put(tenant_id, text, vector.vector, vector.embedder)
        return vector

    def _embed(self, text: str) -> QueryVector:
        # One thread hop for both: load_embedder returns the cached model after the first call.
        embedder = load_embedder(self.embedding)
        vector = embedder.embed_query(text)
        return QueryVector(np.asarray(vector, dtype=np.float32), embedder.name)

    async def retrieve(self, visibility: Visibility, query: SearchQuery) -> list[Candidate]:
        """The best ``top_k`` visible chunks for the query, best first."""
        if query.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if query.uses_vectors and query.vector is None:
            raise ValueError(f"mode {query.mode!r} needs a query vector (see embed_query)")
        started = time.perf_counter()
        try:
            return await self._retrieve(visibility, query)
        finally:
            SEARCH_SECONDS.labels(query.mode).observe(time.perf_counter() - started)

    async def _retrieve(self, visibility: Visibility, query: SearchQuery) -> list[Candidate]:
        if not visibility.sensitivity:
            return []
        index = await self.cache.get(visibility.tenant_id)
        if query.uses_vectors:
            self._check_vector(index, query.vector)
        if query.uses_bm25:
            self._check_analyzer(index)
        want = query.top_k
        if self.reranker is not None:
            want = max(want, self.settings.rerank.depth)
        # Database reads, masks, candidates, fusion and de-duplication are SQL, numpy, FAISS
        # and jieba work: one hop off the event loop for all of it.
        key = await self.cache.read_key(visibility.tenant_id)
        hits = await asyncio.to_thread(self._search, index, visibility, query, want, key)
        if self.reranker is not None and hits:
            hits = await self._rerank(self.reranker, query.text, hits)
        if query.min_score is not None:
            hits = [hit for hit in hits if hit.score >= query.min_score]
        return hits[: query.top_k]

    def _search(
        self,
        index: TenantIndex,
        visibility: Visibility,
        query: SearchQuery,
        want: int,
        key: DataKey | None = None,
    ) -> list[Candidate]:
        """The best ``want`` visible chunks, de-duplicated (blocking: in a thread)."""
        depth = max(self.settings.candidates, want)
        with self.engine.connect() as connection:
            # Filtered: list the visible documents, the filters keep them few. Unfiltered (the
            # common case): ask for the few hidden documents, not the many visible ones.
            visible: IdArray | None = None
            hidden: IdArray | None = None
            if visibility.filtered:
                visible = search_repository.visible_document_ids(connection, visibility)
                if visible.size == 0:
                    return []
            else:
                hidden = search_repository.hidden_document_ids(connection, visibility)
            disabled = search_repository.hidden_chunk_ids(connection, visibility.tenant_id)
            prepared = self._prepare(index, visible, hidden, disabled, query)
            if not prepared.masked:
                return []
            while True:
                candidates = self._candidates(index, prepared.masked, query, depth)
                ids, scores = self._fuse(candidates)
                dedupe = Deduplicator(
                    max_per_document=self.settings.max_chunks_per_document,
                    threshold=self.settings.near_duplicate_threshold,
                )
                self._walk(connection, visibility, ids, scores, dedupe, want, key)
                if (
                    len(dedupe.kept) >= want
                    or candidates.exhausted
                    or depth >= self.settings.max_candidates
                ):
                    break
                # De-duplication dropped too many: look deeper (the masks stay).
                depth = min(depth * 4, self.settings.max_candidates)
        if len(dedupe.kept) < want:
            dedupe.backfill(want - len(dedupe.kept))
        return dedupe.kept[:want]

    def _check_vector(self, index: TenantIndex, vector: QueryVector | None) -> None:
        assert vector is not None
        if index.embedder and vector.embedder and index.embedder != vector.embedder:
            raise ServiceUnavailable(
                f"This tenant's index was built with {index.embedder}; the configured embedder "
                f"is {vector.embedder}. Configure the old model again, or re-embed the tenant "
                "with `cairn index rebuild --tenant SLUG --reembed`.",
                code="embedder_mismatch",
            )
        if vector.vector.ndim != 1 or (index.dim and vector.vector.shape[0] != index.dim):
            raise ServiceUnavailable(
                f"The query vector has shape {vector.vector.shape}; the index expects "
                f"{index.dim} dimensions",
                code="embedder_mismatch",
            )

    @staticmethod
    def _check_analyzer(index: TenantIndex) -> None:
        """Each BM25 shard is searched with the query tokenized as that shard's analyzer
        records (a knowledge base's shards differ while its new stemmer is applied); a shard
        from another tokenizer version cannot be, and is refused."""
        for shard in index.shards:
            if shard.bm25 is not None and query_stemmer(shard.bm25.analyzer) is None:
                raise ServiceUnavailable(
                    f"This tenant's BM25 index was tokenized by {shard.bm25.analyzer}, which "
                    "this version no longer makes. Re-tokenize the tenant with `cairn index "
                    "rebuild --tenant SLUG` (stored vectors are kept; no re-embedding).",
                    code="tokenizer_mismatch",
                )

    def _prepare(
        self,
        index: TenantIndex,
        visible: IdArray | None,
        hidden: IdArray | None,
        disabled: IdArray,
        query: SearchQuery,
    ) -> _Prepared:
        """Each shard with its allowed ids (shards with none dropped) and the query's BM25
        tokens for it. Exactly one of ``visible`` (filtered searches) and ``hidden`` is
        given; ``disabled`` chunks are never allowed."""

        def allowed_in(shard: LoadedShard) -> IdArray | None:
            if visible is not None:
                return allowed_ids(shard.chunk_ids, shard.document_of, visible, shard.documents)
            assert hidden is not None
            return allowed_ids_except(shard.chunk_ids, shard.document_of, shard.documents, hidden)

        # At most one tokenization per stemmer in use (two while a rebuild runs).
        by_stemmer: dict[StemmerName, list[str]] = {}

        def tokens_for(shard: LoadedShard) -> list[str]:
            if not query.uses_bm25 or shard.bm25 is None:
                return []
            stemmer = query_stemmer(shard.bm25.analyzer)
            if stemmer is None:  # checked before the search; changed since: no terms
                return []
            if stemmer not in by_stemmer:
                by_stemmer[stemmer] = tokenize(query.text, stemmer=stemmer)
            return by_stemmer[stemmer]

        masked = [
            _Masked(shard, allowed, present(shard.chunk_ids, disabled), tokens_for(shard))
            for shard in index.shards
            if (allowed := allowed_in(shard)) is None or allowed.size
        ]
        return _Prepared(masked)

    def _candidates(
        self,
        index: TenantIndex,
        masked: Sequence[_Masked],
        query: SearchQuery,
        depth: int,
    ) -> _Candidates:
        """Top-``depth`` BM25 and vector candidates over every shard (blocking: in a thread).

        In hybrid mode the vector search runs on a second thread while BM25 scores here:
        FAISS releases the GIL, so a query's latency is the slower of the two, not their sum.
        """
        vector = query.vector.vector if query.vector is not None else None
        pending: Future[Ranking] | None = None
        if vector is not None and query.uses_vectors and query.uses_bm25:
            pending = _vector_pool().submit(self._vectors, masked, vector, depth)
        rankings: list[Ranking] = []
        weights: list[float] = []
        if query.uses_bm25:
            rankings.append(self._bm25(index, masked, depth))
            weights.append(query.weights[0] if query.weights else self.settings.bm25_weight)
        if query.uses_vectors:
            assert vector is not None
            if pending is not None:
                rankings.append(pending.result())
            else:
                rankings.append(self._vectors(masked, vector, depth))
            weights.append(query.weights[1] if query.weights else self.settings.vector_weight)
        exhausted = all(ranking[1].size < depth for ranking in rankings)
        return _Candidates(rankings, weights, exhausted)

    @staticmethod
    def _bm25(index: TenantIndex, masked: Sequence[_Masked], k: int) -> Ranking:
        """BM25 over every shard with its own query tokens. The corpus statistics span all
        shards: while shards of two stemmers coexist, a term's document frequency counts only
        the shards that make it, so scores are close to, not exactly, one index's."""
        if index.stats is None:
            return _EMPTY
        per_shard: list[Ranking] = []
        for m in masked:
            if m.shard.bm25 is not None and m.tokens:
                scores, ids = search_bm25(
                    m.shard.bm25, index.stats, m.tokens, k + m.dropped.size, m.allowed
                )
                per_shard.append(_without(scores, ids, m.dropped))
        return merge_results(per_shard, k) if per_shard else _EMPTY

    @staticmethod
    def _vectors(masked: Sequence[_Masked], vector: FloatVector, k: int) -> Ranking:
        per_shard: list[Ranking] = []
        query = vector.reshape(1, -1)
        for m in masked:
            if m.shard.vector is None:
                continue
            scores, ids = search_shard(m.shard.vector, query, k + m.dropped.size, m.allowed)
            found = ids[0] >= 0
            per_shard.append(_without(scores[0][found], ids[0][found], m.dropped))
        return merge_results(per_shard, k) if per_shard else _EMPTY

    def _fuse(self, candidates: _Candidates) -> tuple[IdArray, npt.NDArray[np.float64]]:
        if len(candidates.rankings) == 1:
            # One retriever: its own scores (BM25, or cosine similarity) are the scores.
            scores, ids = candidates.rankings[0]
            return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float64)
        return fuse(
            candidates.rankings,
            candidates.weights,
            method=self.settings.fusion,
            rrf_k=self.settings.rrf_k,
        )

    def _walk(
        self,
        connection: Connection,
        visibility: Visibility,
        ids: IdArray,
        scores: npt.NDArray[np.float64],
        dedupe: Deduplicator,
        want: int,
        key: DataKey | None = None,
    ) -> None:
        """Offer fused candidates best first, fetching their text in batches, until filled."""
        batch = max(2 * want, 20)
        id_list = ids.tolist()
        score_list = scores.tolist()
        for start in range(0, len(id_list), batch):
            chunk_ids = id_list[start : start + batch]
            rows = search_repository.hit_rows(connection, visibility, chunk_ids, key)
            for chunk_id, score in zip(chunk_ids, score_list[start : start + batch], strict=True):
                row = rows.get(chunk_id)
                if row is None:
                    # Deleted or purged since the masks were made: the hit-text query applies
                    # visibility again.
                    continue
                dedupe.offer(
                    Candidate(
                        chunk_id=chunk_id,
                        document_id=row.document_id,
                        score=score,
                        title=row.title,
                        text=row.text,
                        heading_path=row.heading_path,
                        sensitivity=row.sensitivity,
                    )
                )
                if len(dedupe.kept) >= want:
                    return

    async def _rerank(
        self, reranker: Reranker, query: str, hits: list[Candidate]
    ) -> list[Candidate]:
        scores = await asyncio.to_thread(reranker.rerank, query, [h.text for h in hits])
        if len(scores) != len(hits):
            raise RuntimeError(f"reranker {reranker.name} returned {len(scores)} scores")
        order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
        return [_rescored(hits[i], scores[i]) for i in order]


def _without(scores: npt.NDArray[np.floating], ids: IdArray, dropped: IdArray) -> Ranking:
    """A shard's ranking less the dropped ids (order kept)."""
    if dropped.size == 0:
        return scores, ids
    keep = ~np.isin(ids, dropped)
    return scores[keep], ids[keep]


@functools.cache
def _vector_pool() -> ThreadPoolExecutor:
    """Threads for the vector half of hybrid searches (one per core, at most four)."""
    return ThreadPoolExecutor(
        max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="cairn-vector-search"
    )


def _rescored(hit: Candidate, score: float) -> Candidate:
    return dataclasses.replace(hit, score=float(score))
