"""BM25 shards: an inverted index that scores exactly like ``rank_bm25.BM25Okapi``.

A shard keeps, for its documents only, the term frequencies as a CSC matrix (one column of
postings per term), the document lengths and the chunk ids. Corpus statistics — number of
documents, average length, document frequency per term, average idf — are computed across
all of a tenant's shards (``corpus_stats``), so searching every shard with the same stats
and merging gives the scores of one ``BM25Okapi(k1=1.5, b=0.75, epsilon=0.25)`` built over
the union of the shards' documents:

* ``idf(t) = log(N - df + 0.5) - log(df + 0.5)``; negative values are replaced by
  ``epsilon * average_idf``, the mean of the raw idfs over the whole vocabulary;
* ``score(d, q) = sum over query tokens t (repeats included) of
  idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))``.

A shard records the analyzer (tokenizer version and options, ``tokenize.analyzer_id``) that
made its tokens; ``check_analyzer`` refuses to add to one made by another, since one query
could never match both kinds of tokens. Files written before analyzers were recorded read as
``LEGACY_ANALYZER``.

A query reads only the posting columns of its terms. Shards are immutable: ``add_documents``
and ``remove_ids`` return new shards and never modify arrays a reader may still be using.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from app.search.index.atomic import atomic_write_bytes
from app.search.index.errors import (
    InvalidIds,
    ShardError,
    ShardFormatError,
    StaleCorpusStats,
    StemmerMismatch,
    TokenizerMismatch,
)
from app.search.index.results import merge_results
from app.search.index.sealing import Sealer, read_sealed
from app.search.index.tokenize import LEGACY_ANALYZER, analyzer_id, parse_analyzer

__all__ = [
    "BM25Shard",
    "CorpusStats",
    "add_documents",
    "build_bm25_shard",
    "check_analyzer",
    "corpus_stats",
    "load_bm25_shard",
    "merge_results",
    "remove_ids",
    "save_bm25_shard",
    "search_bm25",
]

IdArray = npt.NDArray[np.int64]
ScoreArray = npt.NDArray[np.float64]

_FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class BM25Shard:
    """Term frequencies of one shard's documents; row i is the document with id ``ids[i]``."""

    ids: IdArray  # (n_docs,) chunk ids, unique and positive
    doc_len: npt.NDArray[np.int64]  # (n_docs,) number of tokens per document
    terms: tuple[str, ...]  # column j holds the postings of terms[j]
    tf: sp.csc_matrix  # (n_docs, n_terms) int32 counts; every column has >= 1 posting
    analyzer: str = field(default_factory=analyzer_id)  # what made the tokens (analyzer_id)
    vocab: Mapping[str, int] = field(init=False, repr=False)  # term -> column

    def __post_init__(self) -> None:
        n_docs, n_terms = self.tf.shape
        if self.ids.shape != (n_docs,) or self.doc_len.shape != (n_docs,):
            raise ShardFormatError("ids, doc_len and tf rows disagree")
        if len(self.terms) != n_terms:
            raise ShardFormatError("terms and tf columns disagree")
        object.__setattr__(self, "vocab", {t: j for j, t in enumerate(self.terms)})
        if len(self.vocab) != n_terms:
            raise ShardFormatError("duplicate terms in the vocabulary")

    @property
    def n_docs(self) -> int:
        """Number of documents in the shard."""
        return int(self.ids.size)

    def document_frequencies(self) -> npt.NDArray[np.int64]:
        """Number of documents containing each term (aligned with ``terms``)."""
        counts: npt.NDArray[np.int64] = np.diff(self.tf.indptr).astype(np.int64)
        return counts


@dataclass(frozen=True)
class CorpusStats:
    """BM25Okapi corpus statistics over all shards of one tenant."""

    n_docs: int
    total_len: int
    df: Mapping[str, int]
    average_idf: float
    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25

    @property
    def avgdl(self) -> float:
        """Average document length in tokens."""
        return self.total_len / self.n_docs if self.n_docs else 0.0

    def idf(self, term: str) -> float:
        """BM25Okapi idf of ``term`` (0 for a term in no document)."""
        df = self.df.get(term)
        if df is None:
            return 0.0
        idf = math.log(self.n_docs - df + 0.5) - math.log(df + 0.5)
        return self.epsilon * self.average_idf if idf < 0 else idf

    @classmethod
    def from_shards(
        cls, shards: Iterable[BM25Shard], *, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25
    ) -> CorpusStats:
        """Statistics of the union of ``shards`` (each document counted once per shard it is in)."""
        df: Counter[str] = Counter()
        n_docs = 0
        total_len = 0
        for shard in shards:
            n_docs += shard.n_docs
            total_len += int(shard.doc_len.sum())
            df.update(dict(zip(shard.terms, shard.document_frequencies().tolist(), strict=True)))
        if df:
            dfs = np.fromiter(df.values(), dtype=np.float64, count=len(df))
            raw_idf = np.log(n_docs - dfs + 0.5) - np.log(dfs + 0.5)
            average_idf = float(raw_idf.mean())
        else:
            average_idf = 0.0
        return cls(n_docs, total_len, dict(df), average_idf, k1, b, epsilon)


def corpus_stats(shards: Iterable[BM25Shard]) -> CorpusStats:
    """BM25Okapi statistics (k1=1.5, b=0.75, epsilon=0.25) over all of a tenant's shards."""
    return CorpusStats.from_shards(shards)


# --------------------------------------------------------------------------- building


def _as_ids(ids: npt.ArrayLike) -> IdArray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidIds(f"ids must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidIds(f"ids must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidIds("ids do not fit in int64")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if int(out.min()) < 1:
        raise InvalidIds("ids must be positive")
    return out


def _count_terms(
    token_lists: Sequence[Sequence[str]], vocab: dict[str, int], terms: list[str]
) -> tuple[sp.csc_matrix, npt.NDArray[np.int64]]:
    """Term-frequency matrix of ``token_lists``; new terms are appended to ``vocab``/``terms``."""
    rows: list[int] = []
    cols: list[int] = []
    counts: list[int] = []
    doc_len = np.zeros(len(token_lists), dtype=np.int64)
    for row, tokens in enumerate(token_lists):
        if isinstance(tokens, str):
            raise ShardError("each document must be a list of tokens, not a string")
        doc_len[row] = len(tokens)
        for term, count in Counter(tokens).items():
            col = vocab.get(term)
            if col is None:
                col = vocab[term] = len(terms)
                terms.append(term)
            rows.append(row)
            cols.append(col)
            counts.append(count)
    tf = sp.csc_matrix(
        (
            np.asarray(counts, dtype=np.int32),
            (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
        ),
        shape=(len(token_lists), len(terms)),
    )
    return tf, doc_len


def build_bm25_shard(
    ids: npt.ArrayLike, token_lists: Sequence[Sequence[str]], *, analyzer: str | None = None
) -> BM25Shard:
    """Build a shard from chunk ids and their token lists, made by ``analyzer`` (default:
    ``analyzer_id()``, the default options of ``tokenize`` / ``document_tokens``)."""
    return add_documents(_empty_shard(analyzer or analyzer_id()), ids, token_lists)


def _empty_shard(analyzer: str) -> BM25Shard:
    return BM25Shard(
        ids=np.empty(0, dtype=np.int64),
        doc_len=np.empty(0, dtype=np.int64),
        terms=(),
        tf=sp.csc_matrix((0, 0), dtype=np.int32),
        analyzer=analyzer,
    )


def check_analyzer(shard: BM25Shard, expected: str, *, where: str = "") -> None:
    """Raise ``TokenizerMismatch`` unless ``shard`` was built by the analyzer ``expected``
    (``StemmerMismatch`` when only the stemmer differs)."""
    if shard.analyzer == expected:
        return
    have, want = parse_analyzer(shard.analyzer), parse_analyzer(expected)
    if (
        have is not None
        and want is not None
        and (have.version, have.heading_repeat) == (want.version, want.heading_repeat)
    ):
        raise StemmerMismatch(
            f"A BM25 shard{where} was tokenized with the stemmer {have.stemmer!r}; "
            f"{want.stemmer!r} is configured for it."
        )
    raise TokenizerMismatch(
        f"A BM25 shard{where} was tokenized by {shard.analyzer!r}; the configured tokenizer "
        f"is {expected!r}. Re-tokenize the tenant with `cairn index rebuild --tenant SLUG` "
        "(rebuilds the shards from the stored chunk text and vectors; no re-embedding), or "
        "configure the old tokenizer again."
    )


def add_documents(
    shard: BM25Shard, ids: npt.ArrayLike, token_lists: Sequence[Sequence[str]]
) -> BM25Shard:
    """A new shard with the documents of ``shard`` plus the given ones (ids must be new)."""
    id_arr = _as_ids(ids)
    if id_arr.size != len(token_lists):
        raise InvalidIds(f"{id_arr.size} ids but {len(token_lists)} documents")
    if np.unique(id_arr).size != id_arr.size:
        raise InvalidIds("ids contain duplicates")
    clash = np.intersect1d(id_arr, shard.ids)
    if clash.size:
        raise InvalidIds(f"{clash.size} ids already in the shard, e.g. {int(clash[0])}")
    if id_arr.size == 0:
        return shard

    # Copies: the old shard's vocabulary must not change under its readers.
    vocab = dict(shard.vocab)
    terms = list(shard.terms)
    new_tf, new_len = _count_terms(token_lists, vocab, terms)
    old = shard.tf
    # Widen the old matrix to the new vocabulary: new columns are empty, so the column
    # pointer array is extended with its last value.
    widened = sp.csc_matrix(
        (
            old.data,
            old.indices,
            np.concatenate([old.indptr, np.full(len(terms) - old.shape[1], old.indptr[-1])]),
        ),
        shape=(old.shape[0], len(terms)),
    )
    tf = sp.vstack([widened, new_tf], format="csc", dtype=np.int32)
    return BM25Shard(
        ids=np.concatenate([shard.ids, id_arr]),
        doc_len=np.concatenate([shard.doc_len, new_len]),
        terms=tuple(terms),
        tf=tf,
        analyzer=shard.analyzer,
    )


def remove_ids(shard: BM25Shard, ids: npt.ArrayLike) -> BM25Shard:
    """A new shard without the documents ``ids`` (absent ids ignored, orphaned terms dropped)."""
    id_arr = _as_ids(ids)
    keep = ~np.isin(shard.ids, id_arr)
    if keep.all():
        return shard
    tf = shard.tf[np.flatnonzero(keep)].tocsc()
    # A term whose every posting was removed must leave the vocabulary: BM25Okapi rebuilt
    # on the remaining documents would not know it, and it would skew average_idf.
    alive = np.flatnonzero(np.diff(tf.indptr) > 0)
    if alive.size != tf.shape[1]:
        tf = tf[:, alive].tocsc()
    return BM25Shard(
        ids=shard.ids[keep],
        doc_len=shard.doc_len[keep],
        terms=tuple(shard.terms[j] for j in alive.tolist()),
        tf=tf.astype(np.int32, copy=False),
        analyzer=shard.analyzer,
    )


# --------------------------------------------------------------------------- searching


def search_bm25(
    shard: BM25Shard,
    stats: CorpusStats,
    query_tokens: Sequence[str],
    k: int,
    allowed_ids: npt.ArrayLike | None = None,
) -> tuple[ScoreArray, IdArray]:
    """Top-k ``(scores, ids)`` (1-D, best first) of documents containing a query term.

    Scores equal ``BM25Okapi.get_scores`` over the corpus ``stats`` describes. A hit is a
    document containing at least one query term; documents containing none (score 0 in
    BM25Okapi) are never returned. Hits can score 0 or below when a term is in half or more
    of a tiny corpus; they are still returned, ranked below positive ones. ``allowed_ids``
    is applied before the top-k cut; ties are broken by ascending id.
    """
    if k < 1:
        raise ShardError(f"k must be >= 1, got {k}")
    if isinstance(query_tokens, str):
        raise ShardError("query_tokens must be a list of tokens, not a string")
    empty = np.empty(0, dtype=np.float64), np.empty(0, dtype=np.int64)
    if shard.n_docs == 0 or not query_tokens:
        return empty
    if stats.n_docs < shard.n_docs:
        raise StaleCorpusStats("corpus stats count fewer documents than this shard holds")

    k1, b = stats.k1, stats.b
    avgdl = stats.avgdl
    scores = np.zeros(shard.n_docs, dtype=np.float64)
    touched = np.zeros(shard.n_docs, dtype=bool)
    indptr, indices, data = shard.tf.indptr, shard.tf.indices, shard.tf.data
    for term in query_tokens:  # repeated tokens count again, as in BM25Okapi
        col = shard.vocab.get(term)
        if col is None:
            continue  # no document of this shard has it: adds 0 here
        if term not in stats.df:
            raise StaleCorpusStats(f"corpus stats do not know the term {term!r} of this shard")
        idf = stats.idf(term)
        rows = indices[indptr[col] : indptr[col + 1]]
        q_freq = data[indptr[col] : indptr[col + 1]].astype(np.float64)
        doc_len = shard.doc_len[rows]
        # Same expression and operation order as BM25Okapi.get_scores, so sums match.
        scores[rows] += idf * (q_freq * (k1 + 1) / (q_freq + k1 * (1 - b + b * doc_len / avgdl)))
        touched[rows] = True

    hits = np.flatnonzero(touched)
    if allowed_ids is not None and hits.size:
        hits = hits[np.isin(shard.ids[hits], _as_ids(allowed_ids))]
    if hits.size == 0:
        return empty
    hit_scores, hit_ids = scores[hits], shard.ids[hits]
    if hits.size > k:
        # Keep every document tied with the k-th score so the id tie-break is exact.
        kth = np.partition(hit_scores, hits.size - k)[hits.size - k]
        top = hit_scores >= kth
        hit_scores, hit_ids = hit_scores[top], hit_ids[top]
    return merge_results([(hit_scores, hit_ids)], k)  # type: ignore[return-value]


# --------------------------------------------------------------------------- files


def save_bm25_shard(
    shard: BM25Shard, path: str | os.PathLike[str], sealer: Sealer | None = None
) -> None:
    """Write a shard to one ``.npz`` file atomically (no pickle; vocabulary as UTF-8 JSON)."""
    buffer = io.BytesIO()
    vocab_json = json.dumps(list(shard.terms), ensure_ascii=False).encode("utf-8")
    np.savez(
        buffer,
        format_version=np.array(_FORMAT_VERSION, dtype=np.int64),
        ids=shard.ids,
        doc_len=shard.doc_len,
        tf_data=shard.tf.data.astype(np.int32, copy=False),
        tf_indices=shard.tf.indices,
        tf_indptr=shard.tf.indptr,
        tf_shape=np.array(shard.tf.shape, dtype=np.int64),
        vocab_json=np.frombuffer(vocab_json, dtype=np.uint8),
        analyzer=np.frombuffer(shard.analyzer.encode("utf-8"), dtype=np.uint8),
    )
    # The whole file is serialised in memory first, so a failure while encoding never
    # touches the disk, and the write itself is all-or-nothing.
    data = buffer.getvalue()
    atomic_write_bytes(path, sealer.seal(data) if sealer is not None else data)


def load_bm25_shard(path: str | os.PathLike[str], sealer: Sealer | None = None) -> BM25Shard:
    """Read a shard written by ``save_bm25_shard`` (a sealed one is decrypted into memory)."""
    name = os.fspath(path)
    try:
        sealed = read_sealed(path, sealer)
        source: str | io.BytesIO = name if sealed is None else io.BytesIO(sealed)
        with np.load(source, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise ShardFormatError(f"cannot read BM25 shard {name!r}: {exc}") from exc
    try:
        version = int(arrays["format_version"])
        if version != _FORMAT_VERSION:
            raise ShardFormatError(
                f"{name!r} has format version {version}, expected {_FORMAT_VERSION}"
            )
        terms = json.loads(arrays["vocab_json"].tobytes().decode("utf-8"))
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise ShardFormatError(f"{name!r} has a malformed vocabulary")
        shape = tuple(int(v) for v in arrays["tf_shape"])
        tf = sp.csc_matrix(
            (arrays["tf_data"], arrays["tf_indices"], arrays["tf_indptr"]), shape=shape
        )
        tf.check_format(full_check=True)
        ids = _as_ids(arrays["ids"])
        if np.unique(ids).size != ids.size:
            raise ShardFormatError(f"{name!r} has duplicate ids")
        # Files from before analyzers were recorded hold unstemmed chunk-text tokens.
        analyzer = (
            arrays["analyzer"].tobytes().decode("utf-8")
            if "analyzer" in arrays
            else LEGACY_ANALYZER
        )
        return BM25Shard(
            ids=ids,
            doc_len=arrays["doc_len"].astype(np.int64, copy=False),
            terms=tuple(terms),
            tf=tf,
            analyzer=analyzer,
        )
    except (KeyError, ValueError, TypeError, InvalidIds) as exc:
        raise ShardFormatError(f"{name!r} is not a valid BM25 shard: {exc}") from exc
