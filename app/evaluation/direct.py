"""BM25 without a database or an embedder: `cairn eval DIR --mode bm25 --direct`.

The corpus goes through the product's own parser, chunker, BM25 tokenizer and shard code in
memory, exactly as `load_dataset` would store and index it (one Markdown file per document,
title as its heading), and each query is scored by ``search_bm25`` with a document ranked by
its best chunk. It gives the BM25 figures of a full `cairn eval --mode bm25` in seconds, so
tokenizer settings can be compared without loading (and embedding) the corpus each time.
Visibility, de-duplication of near-identical chunks and the database play no part: it is a
tool for tokenizer work, not a replacement for the end-to-end evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from app.evaluation.beir import BeirDataset
from app.evaluation.metrics import mean, mrr_at_k, ndcg_at_k, recall_at_k
from app.evaluation.runner import DEPTH, ModeScores, document_filename
from app.kit.settings import Settings
from app.search.index import (
    CorpusStats,
    analyzer_id,
    build_bm25_shard,
    document_tokens,
    search_bm25,
    tokenize,
)
from ingest.chunking import chunk_document
from ingest.parsers import parse


@dataclass(frozen=True)
class DirectChunk:
    doc_id: str
    text: str
    heading_path: tuple[str, ...]


def corpus_chunks(settings: Settings, dataset: BeirDataset) -> list[DirectChunk]:
    """The chunks `cairn eval` would store for the corpus."""
    chunks: list[DirectChunk] = []
    for doc_id, (title, text) in dataset.corpus.items():
        data = f"# {title or doc_id}\n\n{text}\n".encode()
        parsed = parse(data, document_filename(doc_id), settings.parse_limits)
        for chunk in chunk_document(parsed, settings.chunking):
            chunks.append(DirectChunk(doc_id, chunk.text, chunk.heading_path))
    return chunks


def direct_bm25(
    settings: Settings, dataset: BeirDataset, chunks: list[DirectChunk] | None = None
) -> ModeScores:
    """nDCG@10, Recall@100 and MRR@10 of BM25 with the configured tokenizer."""
    chunks = chunks if chunks is not None else corpus_chunks(settings, dataset)
    stemmer, repeat = settings.index.bm25_stemmer, settings.index.bm25_heading_repeat
    tokens = [
        document_tokens(c.text, c.heading_path, stemmer=stemmer, heading_repeat=repeat)
        for c in chunks
    ]
    ids = np.arange(1, len(chunks) + 1, dtype=np.int64)
    shard = build_bm25_shard(ids, tokens, analyzer=analyzer_id(stemmer, repeat))
    stats = CorpusStats.from_shards([shard])
    ndcg, recall, mrr = [], [], []
    started = time.perf_counter()
    for query_id, text in dataset.queries.items():
        # Deep enough that a hundred distinct documents survive the best-chunk collapse.
        _, hits = search_bm25(shard, stats, tokenize(text, stemmer=stemmer), 10 * DEPTH)
        ranked: dict[str, None] = {}
        for chunk_id in hits.tolist():
            ranked.setdefault(chunks[chunk_id - 1].doc_id, None)
            if len(ranked) == DEPTH:
                break
        order = list(ranked)
        relevant = dataset.qrels[query_id]
        ndcg.append(ndcg_at_k(order, relevant, 10))
        recall.append(recall_at_k(order, relevant, 100))
        mrr.append(mrr_at_k(order, relevant, 10))
    elapsed = time.perf_counter() - started
    return ModeScores(
        "bm25",
        mean(ndcg),
        mean(recall),
        mean(mrr),
        1000 * elapsed / max(1, len(dataset.queries)),
    )
