"""Search domain: per-tenant vector and BM25 indexes (``app.search.index``) and retrieval."""

from app.search.index import (
    BM25Shard,
    CorpusStats,
    IndexDimensionMismatch,
    InvalidIds,
    InvalidVectors,
    ShardError,
    ShardFormatError,
    StaleCorpusStats,
    VectorShardConfig,
    merge_results,
    tokenize,
)

__all__ = [
    "BM25Shard",
    "CorpusStats",
    "IndexDimensionMismatch",
    "InvalidIds",
    "InvalidVectors",
    "ShardError",
    "ShardFormatError",
    "StaleCorpusStats",
    "VectorShardConfig",
    "merge_results",
    "tokenize",
]
