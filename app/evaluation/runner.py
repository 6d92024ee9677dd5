"""`cairn eval`: load a BEIR dataset into a tenant through the real pipeline, run every query
through the real retriever in each mode, and report nDCG@10, Recall@100 and MRR@10."""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress
from sqlalchemy import select

from app.container import Container
from app.documents.bulk import operator_access, process_until_done, queue_files
from app.evaluation.beir import BeirDataset
from app.evaluation.metrics import mean, mrr_at_k, ndcg_at_k, recall_at_k
from app.kit.actor import SystemActor
from app.kit.db import Database
from app.kit.settings import Settings
from app.models import Document
from app.search.retriever import QueryVector, Retriever, SearchQuery
from app.search.schemas import SearchMode
from app.search.visibility import Visibility
from app.tenants.repository import tenant_repository
from app.tenants.schemas import TenantCreate
from app.tenants.service import tenant_service
from ingest.embedding import load_embedder

MODES: tuple[SearchMode, ...] = ("bm25", "vector", "hybrid")
# Documents per query ranking: Recall@100 needs a hundred distinct documents.
DEPTH = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class ModeScores:
    mode: SearchMode
    ndcg_10: float
    recall_100: float
    mrr_10: float
    ms_per_query: float


@dataclass
class EvalReport:
    dataset: str
    documents: int
    queries: int
    embedder: str
    ingest_seconds: float
    embed_ms_per_query: float = 0.0
    scores: list[ModeScores] = field(default_factory=list)

    def markdown(self, published: dict[str, tuple[str, str, str]] | None = None) -> str:
        head = "| mode | nDCG@10 | Recall@100 | MRR@10 | ms/query |\n|---|---|---|---|---|\n"
        rows = [
            f"| {s.mode} | {s.ndcg_10:.4f} | {s.recall_100:.4f} | {s.mrr_10:.4f} "
            f"| {s.ms_per_query:.1f} |"
            for s in self.scores
        ]
        for label, (ndcg, recall, mrr) in (published or {}).items():
            rows.append(f"| {label} | {ndcg} | {recall} | {mrr} | |")
        return head + "\n".join(rows)


def retrieval_settings(settings: Settings) -> str:
    """The settings that shape a ranking, as one line for the report."""
    search, index = settings.search, settings.index
    fusion = (
        f"rrf k={search.rrf_k:g}" if search.fusion == "rrf" else search.fusion
    ) + f" weights bm25={search.bm25_weight:g} vector={search.vector_weight:g}"
    return (
        f"bm25 stemmer={index.bm25_stemmer} headings={index.bm25_heading_repeat}; "
        f"embedding heading_context={settings.embedding.heading_context}; "
        f"fusion {fusion}; candidates={search.candidates}; rerank={search.rerank.backend}"
    )


def document_filename(doc_id: str) -> str:
    """The file a BEIR document is loaded as; its name maps hits back to the BEIR id."""
    return f"beir-{_UNSAFE.sub('_', doc_id)}.md"


def write_corpus_files(
    dataset: BeirDataset, folder: Path, doc_ids: Iterable[str] | None = None
) -> list[Path]:
    """Each corpus document (or those of `doc_ids`) as the Markdown file it is uploaded as:
    its title as the heading, then its text."""
    paths = []
    for doc_id in dataset.corpus if doc_ids is None else doc_ids:
        title, text = dataset.corpus[doc_id]
        path = folder / document_filename(doc_id)
        path.write_text(f"# {title or doc_id}\n\n{text}\n", encoding="utf-8")
        paths.append(path)
    return paths


async def _tenant_id(database: Database, slug: str) -> int:
    async with database.sessionmaker() as session, session.begin():
        tenant = await tenant_repository.get_by_slug(session, slug)
        if tenant is None:
            tenant = await tenant_service.create(
                session, SystemActor.OPERATOR, TenantCreate(slug=slug, name=f"Evaluation {slug}")
            )
        return tenant.id


async def _unfinished(database: Database, tenant_id: int) -> list[int]:
    """Documents of the tenant still queued or processing (a load that was interrupted)."""
    async with database.read_sessionmaker() as session:
        rows = await session.scalars(
            select(Document.id).where(
                Document.tenant_id == tenant_id, Document.status.in_(("queued", "processing"))
            )
        )
        return list(rows)


async def load_dataset(
    container: Container, dataset: BeirDataset, tenant: str, progress: Progress
) -> float:
    """Ingest every corpus document not yet in the tenant, and finish any load that was
    interrupted; returns the seconds it took."""
    database = container.database
    tenant_id = await _tenant_id(database, tenant)
    access = await operator_access(database, tenant)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cairn-eval-") as scratch:
        paths = write_corpus_files(dataset, Path(scratch))
        # Content already in the tenant is refused as a duplicate: re-running skips it.
        queued, _ = await queue_files(
            container,
            access,
            paths,
            tags=["eval"],
            sensitivity="internal",
            progress=progress,
        )
        # A load stopped half-way left documents queued (their jobs are still open): finish
        # them too, or they would silently be missing from the ranking.
        pending = sorted(set(queued) | set(await _unfinished(database, tenant_id)))
        if pending:
            await process_until_done(container, pending, progress)
    return time.perf_counter() - started


async def rank_documents(
    retriever: Retriever,
    visibility: Visibility,
    text: str,
    mode: SearchMode,
    vector: QueryVector | None,
) -> list[int]:
    """Cairn document ids in rank order (one hit per document)."""
    hits = await retriever.retrieve(
        visibility, SearchQuery(text=text, mode=mode, top_k=DEPTH, vector=vector)
    )
    seen: dict[int, None] = {}
    for hit in hits:
        seen.setdefault(hit.document_id, None)
    return list(seen)


async def evaluate(
    settings: Settings,
    dataset: BeirDataset,
    *,
    tenant: str,
    modes: Sequence[SearchMode] = MODES,
    progress: Progress | None = None,
    ingest: bool = True,
) -> EvalReport:
    """Load (unless `ingest` is off) and score the dataset in each mode."""
    progress = progress or Progress(disable=True)
    # One chunk per document in the ranking, so a hundred hits are a hundred documents.
    settings = settings.model_copy(
        update={"search": settings.search.model_copy(update={"max_chunks_per_document": 1})}
    )
    container = Container(settings)
    database = container.database
    try:
        seconds = await load_dataset(container, dataset, tenant, progress) if ingest else 0.0
        tenant_id = await _tenant_id(database, tenant)
        wanted = {document_filename(doc_id): doc_id for doc_id in dataset.corpus}
        async with database.read_sessionmaker() as session:
            rows = await session.execute(
                select(Document.id, Document.filename).where(
                    Document.tenant_id == tenant_id, Document.status == "ready"
                )
            )
            beir_id = {doc: wanted[name] for doc, name in rows if name in wanted}
        retriever = container.retriever
        visibility = Visibility.for_tenant(tenant_id)
        embedder = load_embedder(settings.embedding)
        # Each query is embedded once, up front, for every mode; ms/query excludes it.
        vectors: dict[str, QueryVector] = {}
        started = time.perf_counter()
        if any(mode != "bm25" for mode in modes):
            task = progress.add_task("embed queries", total=len(dataset.queries))
            for query_id, text in dataset.queries.items():
                vectors[query_id] = await retriever.embed_query(text)
                progress.advance(task)
        embed_ms = 1000 * (time.perf_counter() - started) / max(1, len(dataset.queries))
        report = EvalReport(
            dataset.name, len(beir_id), len(dataset.queries), embedder.name, seconds, embed_ms
        )
        for mode in modes:
            task = progress.add_task(f"queries ({mode})", total=len(dataset.queries))
            ndcg, recall, mrr = [], [], []
            started = time.perf_counter()
            for query_id, text in dataset.queries.items():
                vector = vectors[query_id] if mode != "bm25" else None
                ranked_docs = await rank_documents(retriever, visibility, text, mode, vector)
                ranked = [beir_id[d] for d in ranked_docs if d in beir_id]
                relevant = dataset.qrels[query_id]
                ndcg.append(ndcg_at_k(ranked, relevant, 10))
                recall.append(recall_at_k(ranked, relevant, 100))
                mrr.append(mrr_at_k(ranked, relevant, 10))
                progress.advance(task)
            elapsed = time.perf_counter() - started
            report.scores.append(
                ModeScores(
                    mode,
                    mean(ndcg),
                    mean(recall),
                    mean(mrr),
                    1000 * elapsed / max(1, len(dataset.queries)),
                )
            )
        return report
    finally:
        await container.close()


def run_eval(
    settings: Settings,
    dataset: BeirDataset,
    *,
    tenant: str,
    modes: Sequence[SearchMode],
    ingest: bool = True,
) -> EvalReport:
    with Progress() as progress:
        return asyncio.run(
            evaluate(
                settings, dataset, tenant=tenant, modes=modes, progress=progress, ingest=ingest
            )
        )
