"""`cairn bench ingest`: end-to-end ingestion throughput beside the embedder's raw throughput.

Both are measured in one run on the same chunks: first the embedder alone over every chunk
the documents yield (batched as the workers batch), then the real pipeline — documents
queued in a fresh SQLite database, the in-process worker pool parsing, chunking, embedding,
storing and indexing them until every one is ready. The ratio of the two throughputs says how
much of the machine the pipeline's own work (parsing, DB, index writes) costs beside the
embedder, which should be the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress
from sqlalchemy import func, select

from app.bench.report import section, write_section
from app.container import Container
from app.documents.bulk import operator_access, process_until_done, queue_files
from app.kit.actor import SystemActor
from app.kit.migrate import upgrade
from app.kit.settings import Settings
from app.models import Chunk, Document
from app.tenants.schemas import TenantCreate
from app.tenants.service import tenant_service
from ingest.chunking import chunk_document
from ingest.embedding import load_embedder
from ingest.parsers import parse

DEFAULT_CORPUS = Path(__file__).resolve().parents[2].parent / "shared/eval/scifact/corpus.jsonl"


@dataclass(frozen=True)
class IngestBenchResult:
    documents: int
    chunks: int
    embedder: str
    raw_seconds: float
    queue_seconds: float
    pipeline_seconds: float
    concurrency: int

    @property
    def raw_chunks_per_s(self) -> float:
        return self.chunks / self.raw_seconds

    @property
    def pipeline_chunks_per_s(self) -> float:
        return self.chunks / self.pipeline_seconds

    @property
    def ratio(self) -> float:
        return self.pipeline_chunks_per_s / self.raw_chunks_per_s

    def markdown(self) -> str:
        rows = [
            ("documents", f"{self.documents}"),
            ("chunks", f"{self.chunks}"),
            ("embedding model", f"`{self.embedder}`"),
            ("worker concurrency", f"{self.concurrency}"),
            ("raw embedder: seconds", f"{self.raw_seconds:.1f}"),
            ("raw embedder: chunks/s", f"{self.raw_chunks_per_s:.1f}"),
            ("pipeline: seconds (queued → all ready)", f"{self.pipeline_seconds:.1f}"),
            ("pipeline: documents/s", f"{self.documents / self.pipeline_seconds:.2f}"),
            ("pipeline: chunks/s", f"{self.pipeline_chunks_per_s:.1f}"),
            ("**pipeline / raw embedder**", f"**{self.ratio:.0%}** (target ≥ 85%)"),
            ("upload + queue (API work, before the pipeline)", f"{self.queue_seconds:.1f} s"),
        ]
        table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
        return (
            table + "\n\nThe pipeline time covers parsing, chunking, embedding, storing chunks and"
            " writing FAISS and BM25 shards, with the in-process worker pool on SQLite. The raw"
            " figure embeds the same chunk texts with the same batch size in the same process."
        )


def corpus_documents(corpus: Path | None, count: int) -> list[tuple[str, str]]:
    """(filename, text) pairs: BEIR corpus records when a corpus exists, else generated text."""
    if corpus is not None and corpus.is_file():
        documents: list[tuple[str, str]] = []
        with corpus.open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                body = f"# {record.get('title') or record['_id']}\n\n{record['text']}\n"
                documents.append((f"{record['_id']}.md", body))
                if len(documents) == count:
                    break
        return documents
    return [
        (
            f"generated-{n}.txt",
            "\n\n".join(
                f"Report {n}, section {p}: the inspection of unit {n * 31 + p} recorded "
                f"{(n + p) % 17} faults and a pressure of {900 + p * 7} kilopascal."
                for p in range(12)
            ),
        )
        for n in range(count)
    ]


async def run_ingest_bench(
    settings: Settings, documents: list[tuple[str, str]]
) -> IngestBenchResult:
    """Measure raw embedding and the full pipeline on `documents` in a scratch data folder."""
    embedder = await asyncio.to_thread(load_embedder, settings.embedding)
    texts = [
        chunk.text
        for name, body in documents
        for chunk in chunk_document(
            parse(body.encode(), name, settings.parse_limits), settings.chunking
        )
    ]
    embedder.embed_passages(texts[:8])  # warm up caches and thread pools
    batch = settings.worker.embed_batch
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        await asyncio.to_thread(embedder.embed_passages, texts[start : start + batch])
    raw_seconds = time.perf_counter() - started

    await asyncio.to_thread(upgrade, settings.resolved_database_url)
    container = Container(settings)
    database = container.database
    try:
        async with database.sessionmaker() as session, session.begin():
            await tenant_service.create(
                session, SystemActor.OPERATOR, TenantCreate(slug="bench", name="Bench")
            )
        access = await operator_access(database, "bench")
        folder = settings.data_dir / "corpus"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, body in documents:
            path = folder / name
            path.write_text(body, encoding="utf-8")
            paths.append(path)
        quiet = Progress(disable=True)
        started = time.perf_counter()
        queued, skipped = await queue_files(
            container, access, paths, tags=[], sensitivity="internal", progress=quiet
        )
        queue_seconds = time.perf_counter() - started
        if skipped:
            raise RuntimeError(f"bench documents refused: {skipped[:3]}")
        started = time.perf_counter()
        await process_until_done(container, queued, quiet)
        pipeline_seconds = time.perf_counter() - started
        async with database.read_sessionmaker() as session:
            chunks = await session.scalar(select(func.count()).select_from(Chunk)) or 0
            ready = await session.scalar(
                select(func.count()).select_from(Document).where(Document.status == "ready")
            )
        if ready != len(queued) or chunks != len(texts):
            raise RuntimeError(
                f"pipeline disagrees with the raw run: {ready}/{len(queued)} ready, "
                f"{chunks} chunks stored vs {len(texts)} chunked"
            )
    finally:
        await container.close()
    return IngestBenchResult(
        documents=len(queued),
        chunks=len(texts),
        embedder=embedder.name,
        raw_seconds=raw_seconds,
        queue_seconds=queue_seconds,
        pipeline_seconds=pipeline_seconds,
        concurrency=settings.worker.concurrency,
    )


def bench_ingest(
    base: Settings, *, documents: int, corpus: Path | None, output: Path
) -> IngestBenchResult:
    """Run the ingest benchmark in a scratch folder and record it in `output`."""
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as scratch:
        settings = base.model_copy(
            update={
                "environment": "test",
                "data_dir": Path(scratch),
                "database_url": None,
                "jwt_secret": secrets.token_urlsafe(48),
                "audit_secret": secrets.token_urlsafe(48),
            }
        )
        result = asyncio.run(run_ingest_bench(settings, corpus_documents(corpus, documents)))
    source = corpus.name if corpus is not None and corpus.is_file() else "generated text"
    command = f"cairn bench ingest --documents {documents}"
    body = f"Corpus: first {result.documents} documents of {source}.\n\n" + result.markdown()
    write_section(output, "ingest", section("Ingestion throughput", command, body))
    return result
