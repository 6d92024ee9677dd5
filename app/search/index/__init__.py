"""Per-tenant index shards: FAISS vectors and BM25 postings, as plain functions over shards.

``remove_ids`` exists for both kinds of shard; it is exported here as ``remove_vector_ids``
and ``remove_bm25_ids`` (or use the modules ``vector_shard`` / ``bm25_shard`` directly).
The function ``tokenize`` shadows its module's attribute here; import the module with
``importlib.import_module("app.search.index.tokenize")`` if you need it.
"""

from app.search.index import bm25_shard, vector_shard
from app.search.index.atomic import atomic_path, atomic_write_bytes, remove_stale_temps
from app.search.index.bm25_shard import (
    BM25Shard,
    CorpusStats,
    add_documents,
    build_bm25_shard,
    check_analyzer,
    corpus_stats,
    load_bm25_shard,
    save_bm25_shard,
    search_bm25,
)
from app.search.index.bm25_shard import remove_ids as remove_bm25_ids
from app.search.index.errors import (
    IndexDimensionMismatch,
    InvalidIds,
    InvalidVectors,
    ShardError,
    ShardFormatError,
    StaleCorpusStats,
    StemmerMismatch,
    TokenizerMismatch,
)
from app.search.index.results import merge_results
from app.search.index.tokenize import analyzer_id, document_tokens, query_stemmer, tokenize
from app.search.index.vector_shard import (
    VectorShardConfig,
    add_vectors,
    build_shard,
    default_nlist,
    index_ids,
    is_approximate,
    load_shard,
    maybe_upgrade,
    reconstruct_all,
    save_shard,
    search_shard,
    shard_size,
    to_device,
)
from app.search.index.vector_shard import remove_ids as remove_vector_ids

__all__ = [
    "BM25Shard",
    "CorpusStats",
    "IndexDimensionMismatch",
    "InvalidIds",
    "InvalidVectors",
    "ShardError",
    "ShardFormatError",
    "StaleCorpusStats",
    "StemmerMismatch",
    "TokenizerMismatch",
    "VectorShardConfig",
    "add_documents",
    "add_vectors",
    "analyzer_id",
    "atomic_path",
    "atomic_write_bytes",
    "bm25_shard",
    "build_bm25_shard",
    "build_shard",
    "check_analyzer",
    "corpus_stats",
    "default_nlist",
    "document_tokens",
    "index_ids",
    "is_approximate",
    "load_bm25_shard",
    "load_shard",
    "maybe_upgrade",
    "merge_results",
    "query_stemmer",
    "reconstruct_all",
    "remove_bm25_ids",
    "remove_stale_temps",
    "remove_vector_ids",
    "save_bm25_shard",
    "save_shard",
    "search_bm25",
    "search_shard",
    "shard_size",
    "to_device",
    "tokenize",
    "vector_shard",
]
