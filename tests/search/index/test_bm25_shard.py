"""BM25 shards score exactly like rank_bm25.BM25Okapi over the union of a tenant's shards."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rank_bm25 import BM25Okapi

from app.search.index.bm25_shard import (
    BM25Shard,
    CorpusStats,
    add_documents,
    build_bm25_shard,
    corpus_stats,
    load_bm25_shard,
    merge_results,
    remove_ids,
    save_bm25_shard,
    search_bm25,
)
from app.search.index.errors import InvalidIds, ShardError, ShardFormatError, StaleCorpusStats
from app.search.index.tokenize import tokenize

TOL = 1e-6

# "cairn" is in more than half of the documents, so its raw idf is negative and the
# epsilon floor applies; several terms repeat inside a document; Chinese and English mix.
TEXTS = [
    "Cairn indexes documents for every tenant and answers questions with citations.",
    "Cairn 把文档切分成块，并为每个租户建立向量索引和关键词索引。",
    "The hybrid retriever fuses BM25 scores with vector similarity from FAISS.",
    "Cairn stores FAISS shards on disk; a shard is rewritten atomically after each change.",
    "删除文档时，Cairn 会从每个向量分片和关键词索引中移除它的内容。",
    "Audit logs are hash chained so that any edit of an entry is detected.",
    "Cairn supports PDF, DOCX, HTML and plain text uploads, up to a size limit.",
    "检索结果按分数排序，并附带文档标题和引用片段。检索速度很快。",
    "Vector search uses inner product on normalised embeddings; cairn shards use IVF when large.",
    "Chunks are embedded in batches and the BM25 postings are updated in the same job.",
    "租户管理员可以上传文档、删除文档，并查看审计日志。Cairn 审计日志不可篡改。",
    "A restricted viewer only sees public and internal documents in search results.",
    "Cairn cairn CAIRN: the name repeats three times in this chunk about search search.",
    "中文分词使用结巴分词，英文单词转为小写并去掉停用词。",
    "Rate limits protect the search endpoint; cairn returns 429 when a client is too fast.",
    "",  # an empty chunk still counts in N and in the average length
]


def reference(token_lists: Sequence[Sequence[str]]) -> BM25Okapi:
    return BM25Okapi([list(tokens) for tokens in token_lists], k1=1.5, b=0.75, epsilon=0.25)


def scores_by_id(
    per_shard: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]],
) -> dict[int, float]:
    merged_scores, merged_ids = merge_results(per_shard, 10**6)
    assert merged_ids.size == np.unique(merged_ids).size
    return dict(zip(merged_ids.tolist(), merged_scores.tolist(), strict=True))


def assert_matches_reference(
    shards: Sequence[BM25Shard],
    token_lists: Sequence[Sequence[str]],
    ids: Sequence[int],
    query: Sequence[str],
) -> None:
    """Every score equals BM25Okapi's; exactly the documents with a query term are hits."""
    ref = reference(token_lists)
    expected = ref.get_scores(list(query))
    stats = corpus_stats(shards)
    assert stats.n_docs == ref.corpus_size
    assert stats.avgdl == pytest.approx(ref.avgdl, abs=TOL)
    assert stats.average_idf == pytest.approx(ref.average_idf, abs=TOL)
    got = scores_by_id([search_bm25(shard, stats, query, 10**6) for shard in shards])
    query_set = set(query)
    for doc_id, tokens, want in zip(ids, token_lists, expected, strict=True):
        if query_set & set(tokens):
            assert got[doc_id] == pytest.approx(want, abs=TOL), doc_id
        else:
            assert doc_id not in got
            assert want == 0.0


@pytest.fixture(scope="module")
def corpus() -> tuple[list[list[str]], list[int]]:
    token_lists = [tokenize(text) for text in TEXTS]
    ids = [1000 + 7 * i for i in range(len(token_lists))]  # not 0..n-1 on purpose
    return token_lists, ids


QUERIES = [
    tokenize("cairn search"),  # "cairn" is in > half of the documents: epsilon floor
    ["search", "search", "faiss"],  # repeated query token counts twice
    ["faiss", "not-in-vocab", "向量", "索引"],  # unknown term adds nothing
    tokenize("如何删除文档并查看审计日志"),
    ["nothing", "matches"],
]


def test_fixture_exercises_the_epsilon_floor(corpus: tuple[list[list[str]], list[int]]) -> None:
    token_lists, _ = corpus
    ref = reference(token_lists)
    df = sum("cairn" in tokens for tokens in token_lists)
    assert df > len(token_lists) / 2
    assert ref.idf["cairn"] == pytest.approx(ref.epsilon * ref.average_idf)
    assert any(tokens.count(t) > 1 for tokens in token_lists for t in tokens)
    assert any("索引" in tokens for tokens in token_lists)


@pytest.mark.parametrize("query", QUERIES)
def test_one_shard_equals_bm25okapi(
    corpus: tuple[list[list[str]], list[int]], query: list[str]
) -> None:
    token_lists, ids = corpus
    assert_matches_reference([build_bm25_shard(ids, token_lists)], token_lists, ids, query)


@pytest.mark.parametrize("query", QUERIES)
def test_three_shards_equal_bm25okapi_over_the_union(
    corpus: tuple[list[list[str]], list[int]], query: list[str]
) -> None:
    token_lists, ids = corpus
    cuts = [(0, 5), (5, 11), (11, len(ids))]
    shards = [build_bm25_shard(ids[a:b], token_lists[a:b]) for a, b in cuts]
    assert_matches_reference(shards, token_lists, ids, query)


@pytest.mark.parametrize("query", QUERIES)
def test_after_remove_ids_equals_bm25okapi_on_remaining(
    corpus: tuple[list[list[str]], list[int]], query: list[str]
) -> None:
    token_lists, ids = corpus
    cuts = [(0, 5), (5, 11), (11, len(ids))]
    shards = [build_bm25_shard(ids[a:b], token_lists[a:b]) for a, b in cuts]
    # Remove the only documents with "faiss" in two shards, and a Chinese one.
    doomed = {ids[2], ids[3], ids[8], ids[4], 999_999}
    shards = [remove_ids(shard, sorted(doomed)) for shard in shards]
    kept = [(i, t) for i, t in zip(ids, token_lists, strict=True) if i not in doomed]
    assert_matches_reference(shards, [t for _, t in kept], [i for i, _ in kept], query)
    all_terms = {term for shard in shards for term in shard.terms}
    assert all_terms == {term for _, tokens in kept for term in tokens}


def test_add_documents_equals_building_at_once(corpus: tuple[list[list[str]], list[int]]) -> None:
    token_lists, ids = corpus
    shard = build_bm25_shard(ids[:4], token_lists[:4])
    grown = add_documents(shard, ids[4:9], token_lists[4:9])
    grown = add_documents(grown, ids[9:], token_lists[9:])
    assert shard.n_docs == 4  # the original is untouched
    for query in QUERIES:
        assert_matches_reference([grown], token_lists, ids, query)
    with pytest.raises(InvalidIds, match="already in the shard"):
        add_documents(grown, [ids[0]], [["x"]])
    with pytest.raises(InvalidIds):
        add_documents(grown, [5, 5], [["x"], ["y"]])
    with pytest.raises(InvalidIds):
        add_documents(grown, [5], [["x"], ["y"]])


def test_allowed_ids_filter_before_top_k(corpus: tuple[list[list[str]], list[int]]) -> None:
    token_lists, ids = corpus
    shard = build_bm25_shard(ids, token_lists)
    stats = corpus_stats([shard])
    query = ["cairn", "search"]
    expected = reference(token_lists).get_scores(query)
    hits = [
        i for i, tokens in zip(ids, token_lists, strict=True) if {"cairn", "search"} & set(tokens)
    ]
    _, unfiltered = search_bm25(shard, stats, query, 3)
    allowed = [i for i in hits if i not in set(unfiltered.tolist())][:4] + [1]  # 1: unknown id
    scores, found = search_bm25(shard, stats, query, 3, allowed_ids=allowed)
    assert found.size == 3  # filled from allowed documents, not post-filtered
    assert set(found.tolist()) <= set(allowed)
    want = sorted(
        ((expected[ids.index(i)], i) for i in allowed if i in ids), key=lambda p: (-p[0], p[1])
    )[:3]
    assert found.tolist() == [i for _, i in want]
    np.testing.assert_allclose(scores, [s for s, _ in want], atol=TOL)
    assert search_bm25(shard, stats, query, 3, allowed_ids=[])[1].size == 0


def test_ranking_ties_by_id_and_k_cut() -> None:
    token_lists = [["a", "b"], ["a", "b"], ["a", "b"], ["c"], ["a", "b"]]
    ids = [50, 10, 40, 30, 20]
    shard = build_bm25_shard(ids, token_lists)
    stats = corpus_stats([shard])
    scores, found = search_bm25(shard, stats, ["b"], 3)
    assert found.tolist() == [10, 20, 40]
    assert scores.dtype == np.float64
    assert found.dtype == np.int64
    assert np.all(scores == scores[0])


def test_negative_and_zero_score_hits_are_returned_but_non_matches_are_not() -> None:
    # One document: every idf is negative, so is average_idf and the epsilon floor.
    shard = build_bm25_shard([7], [["only", "doc"]])
    stats = corpus_stats([shard])
    scores, found = search_bm25(shard, stats, ["only"], 5)
    assert found.tolist() == [7]
    assert scores[0] == pytest.approx(reference([["only", "doc"]]).get_scores(["only"])[0], abs=TOL)
    assert scores[0] < 0
    assert search_bm25(shard, stats, ["other"], 5)[1].size == 0


def test_empty_inputs() -> None:
    shard = build_bm25_shard([], [])
    stats = corpus_stats([shard])
    assert stats.n_docs == 0
    assert stats.average_idf == 0.0
    assert stats.avgdl == 0.0
    assert search_bm25(shard, stats, ["x"], 5)[1].size == 0
    full = build_bm25_shard([1], [["x"]])
    assert search_bm25(full, corpus_stats([full]), [], 5)[1].size == 0
    with pytest.raises(ShardError):
        search_bm25(full, corpus_stats([full]), ["x"], 0)
    with pytest.raises(ShardError):
        search_bm25(full, corpus_stats([full]), "x", 1)  # a string, not a token list
    with pytest.raises(ShardError):
        build_bm25_shard([1], ["not tokenized"])


def test_stale_stats_are_detected() -> None:
    old = build_bm25_shard([1, 2], [["a"], ["b"]])
    stats = corpus_stats([old])
    grown = add_documents(old, [3], [["new-term"]])
    with pytest.raises(StaleCorpusStats):
        search_bm25(grown, stats, ["new-term"], 5)
    other = build_bm25_shard([4, 5, 6], [["a"], ["a"], ["a"]])
    with pytest.raises(StaleCorpusStats):
        search_bm25(other, stats, ["a"], 5)


def test_remove_everything_and_unknown_ids() -> None:
    shard = build_bm25_shard([1, 2], [["a", "b"], ["b"]])
    assert remove_ids(shard, [3]) is shard
    empty = remove_ids(shard, [1, 2])
    assert empty.n_docs == 0
    assert empty.terms == ()
    assert search_bm25(empty, corpus_stats([empty]), ["a"], 3)[1].size == 0
    with pytest.raises(InvalidIds):
        remove_ids(shard, [0])


def test_save_load_round_trip(corpus: tuple[list[list[str]], list[int]], tmp_path: Path) -> None:
    token_lists, ids = corpus
    shard = remove_ids(build_bm25_shard(ids, token_lists), [ids[3]])
    path = tmp_path / "t1" / "bm25-0.npz"
    save_bm25_shard(shard, path)
    assert list(path.parent.iterdir()) == [path]
    loaded = load_bm25_shard(path)
    np.testing.assert_array_equal(loaded.ids, shard.ids)
    np.testing.assert_array_equal(loaded.doc_len, shard.doc_len)
    assert loaded.terms == shard.terms
    assert "向量" in loaded.terms
    assert (loaded.tf != shard.tf).nnz == 0
    stats, loaded_stats = corpus_stats([shard]), corpus_stats([loaded])
    assert loaded_stats == stats
    for query in QUERIES:
        s1, i1 = search_bm25(shard, stats, query, 5)
        s2, i2 = search_bm25(loaded, loaded_stats, query, 5)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)
    # Overwriting keeps one file; the loaded shard is independent of the file.
    save_bm25_shard(remove_ids(shard, [ids[0]]), path)
    assert load_bm25_shard(path).n_docs == shard.n_docs - 1 == loaded.n_docs - 1


def test_load_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(ShardFormatError):
        load_bm25_shard(path)
    np.savez(path, ids=np.arange(3))
    with pytest.raises(ShardFormatError):
        load_bm25_shard(path)


def test_corpus_stats_from_shards_parameters() -> None:
    shards = [build_bm25_shard([1], [["a", "a", "b"]]), build_bm25_shard([2], [["a"]])]
    stats = CorpusStats.from_shards(shards)
    assert (stats.n_docs, stats.total_len, dict(stats.df)) == (2, 4, {"a": 2, "b": 1})
    assert stats.idf("missing") == 0.0
    assert stats == corpus_stats(shards)


# --------------------------------------------------------------------------- property test

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "北京", "索引"]


@st.composite
def corpora(draw: st.DrawFn) -> tuple[list[list[str]], list[int], list[str]]:
    token_lists = draw(
        st.lists(st.lists(st.sampled_from(WORDS), max_size=8), min_size=1, max_size=14).filter(
            lambda docs: any(docs)  # BM25Okapi divides by the vocabulary size
        )
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(token_lists)), max_size=2)))
    query = draw(st.lists(st.sampled_from([*WORDS, "unknown"]), min_size=1, max_size=6))
    return token_lists, cuts, query


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(corpora(), st.data())
def test_property_random_corpora_match_bm25okapi(
    case: tuple[list[list[str]], list[int], list[str]], data: st.DataObject
) -> None:
    token_lists, cuts, query = case
    ids = [3 * i + 1 for i in range(len(token_lists))]
    bounds = [0, *cuts, len(token_lists)]
    shards = [
        build_bm25_shard(ids[a:b], token_lists[a:b])
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    assert_matches_reference(shards, token_lists, ids, query)
    # Then delete some documents (but keep at least one token somewhere).
    doomed = set(data.draw(st.lists(st.sampled_from(ids), max_size=len(ids))))
    kept = [(i, t) for i, t in zip(ids, token_lists, strict=True) if i not in doomed]
    if any(t for _, t in kept):
        shards = [remove_ids(shard, sorted(doomed)) for shard in shards]
        assert_matches_reference(shards, [t for _, t in kept], [i for i, _ in kept], query)


# --------------------------------------------------------------------------- analyzer versions


def _strip_analyzer(path: Path) -> None:
    """Rewrite a shard file as one written before analyzers were recorded."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files if key != "analyzer"}
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def test_analyzer_is_recorded_kept_and_checked(tmp_path: Path) -> None:
    from app.search.index.bm25_shard import check_analyzer
    from app.search.index.errors import StemmerMismatch, TokenizerMismatch
    from app.search.index.tokenize import LEGACY_ANALYZER, analyzer_id

    plain = analyzer_id("none", 0)
    shard = build_bm25_shard([1, 2], [["a"], ["b"]], analyzer=plain)
    assert shard.analyzer == plain
    assert build_bm25_shard([1], [["a"]]).analyzer == analyzer_id()  # the default
    # Derived shards keep the analyzer that made their tokens.
    assert add_documents(shard, [3], [["c"]]).analyzer == plain
    assert remove_ids(shard, [1]).analyzer == plain
    path = tmp_path / "bm25.npz"
    save_bm25_shard(shard, path)
    assert load_bm25_shard(path).analyzer == plain
    check_analyzer(load_bm25_shard(path), plain)
    with pytest.raises(TokenizerMismatch, match="cairn index rebuild --tenant"):
        check_analyzer(load_bm25_shard(path), analyzer_id())
    # Only the stemmer differs (a knowledge base chose another): the writer can re-tokenize.
    with pytest.raises(StemmerMismatch, match="'none'; 'english' is configured"):
        check_analyzer(load_bm25_shard(path), analyzer_id("english", 0))
    # A file from before analyzers were recorded reads as the legacy analyzer, is still
    # readable (so it can be rebuilt), and is refused against any current one.
    _strip_analyzer(path)
    old = load_bm25_shard(path)
    assert old.analyzer == LEGACY_ANALYZER
    np.testing.assert_array_equal(old.ids, shard.ids)
    with pytest.raises(TokenizerMismatch, match=r"no re-embedding"):
        check_analyzer(old, plain)
