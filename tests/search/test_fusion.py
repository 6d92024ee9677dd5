"""Fusion (RRF, weighted scores) and de-duplication are pure and deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from app.search.dedupe import Candidate, Deduplicator, jaccard
from app.search.fusion import fuse, reciprocal_rank_fusion, weighted_score_fusion, zscore_fusion


def ranking(*ids: int, scores: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    values = scores if scores is not None else [float(len(ids) - i) for i in range(len(ids))]
    return np.array(values, dtype=np.float64), np.array(ids, dtype=np.int64)


class TestReciprocalRankFusion:
    def test_scores_are_weighted_reciprocal_ranks(self) -> None:
        ids, scores = reciprocal_rank_fusion([ranking(1, 2, 3), ranking(3, 1)], [1.0, 1.0], k=60)
        expected = {1: 1 / 61 + 1 / 62, 2: 1 / 62, 3: 1 / 63 + 1 / 61}
        assert ids.tolist() == [1, 3, 2]
        np.testing.assert_allclose(scores, [expected[i] for i in ids.tolist()])

    def test_weights_scale_each_retriever(self) -> None:
        ids, _ = reciprocal_rank_fusion([ranking(1, 2), ranking(2, 1)], [1.0, 3.0], k=1)
        assert ids.tolist() == [2, 1]
        ids, _ = reciprocal_rank_fusion([ranking(1, 2), ranking(2, 1)], [1.0, 0.0], k=1)
        assert ids.tolist() == [1, 2]

    def test_ties_break_by_chunk_id_whatever_the_input_order(self) -> None:
        a, _ = reciprocal_rank_fusion([ranking(7, 3), ranking(3, 7)], [1.0, 1.0])
        b, _ = reciprocal_rank_fusion([ranking(3, 7), ranking(7, 3)], [1.0, 1.0])
        assert a.tolist() == b.tolist() == [3, 7]

    def test_raw_scores_do_not_matter(self) -> None:
        low, _ = reciprocal_rank_fusion([ranking(1, 2, scores=[0.2, 0.1])], [1.0])
        high, _ = reciprocal_rank_fusion([ranking(1, 2, scores=[900.0, 0.5])], [1.0])
        assert low.tolist() == high.tolist() == [1, 2]

    def test_empty_and_invalid_input(self) -> None:
        ids, scores = reciprocal_rank_fusion([ranking(), ranking()], [1.0, 1.0])
        assert ids.size == 0
        assert scores.size == 0
        with pytest.raises(ValueError, match="k must be"):
            reciprocal_rank_fusion([ranking(1)], [1.0], k=0)
        with pytest.raises(ValueError, match="weights"):
            reciprocal_rank_fusion([ranking(1)], [1.0, 1.0])
        with pytest.raises(ValueError, match=">= 0"):
            reciprocal_rank_fusion([ranking(1)], [-1.0])


class TestWeightedScoreFusion:
    def test_min_max_normalised_weighted_sum(self) -> None:
        bm25 = ranking(1, 2, 3, scores=[10.0, 5.0, 0.0])
        vector = ranking(3, 2, scores=[0.9, 0.5])
        ids, scores = weighted_score_fusion([bm25, vector], [1.0, 2.0])
        # bm25 → 1: 1.0, 2: 0.5, 3: 0.0; vector → 3: 1.0, 2: 0.0 (1 is missing: 0)
        assert dict(zip(ids.tolist(), scores.tolist(), strict=True)) == pytest.approx(
            {1: 1.0, 2: 0.5, 3: 2.0}
        )
        assert ids.tolist() == [3, 1, 2]

    def test_single_or_tied_candidates_count_fully(self) -> None:
        ids, scores = weighted_score_fusion([ranking(4, scores=[0.3])], [0.5])
        assert ids.tolist() == [4]
        assert scores.tolist() == [0.5]
        ids, scores = weighted_score_fusion([ranking(5, 4, scores=[2.0, 2.0])], [1.0])
        assert ids.tolist() == [4, 5]
        assert scores.tolist() == [1.0, 1.0]

    def test_fuse_dispatches_on_the_configured_method(self) -> None:
        rankings = [
            ranking(1, 2, 3, scores=[1.0, 0.95, 0.0]),
            ranking(2, 1, 3, scores=[1.0, 0.0, 0.0]),
        ]
        # Same ranks (an RRF tie, broken by id); the scores say 2 is nearly as good as 1.
        assert fuse(rankings, [1.0, 1.0], method="rrf")[0].tolist() == [1, 2, 3]
        assert fuse(rankings, [1.0, 1.0], method="weighted")[0].tolist() == [2, 1, 3]
        with pytest.raises(ValueError, match="unknown fusion"):
            fuse(rankings, [1.0, 1.0], method="nope")  # type: ignore[arg-type]


class TestZScoreFusion:
    def test_hand_checked_sums_with_missing_ids_at_the_floor(self) -> None:
        bm25 = ranking(1, 2, 3, scores=[3.0, 2.0, 1.0])
        vector = ranking(3, 4, scores=[10.0, 0.0])
        ids, scores = zscore_fusion([bm25, vector], [1.0, 1.0])
        # bm25: mean 2, std sqrt(2/3) → z = ±1.2247, 0; vector: mean 5, std 5 → z = ±1.
        # A missing id takes that ranking's lowest z: 1 and 2 get -1 there, 4 gets -1.2247.
        z = 1 / np.sqrt(2 / 3)
        expected = {1: z - 1, 2: 0 - 1, 3: -z + 1, 4: -z - 1}
        assert dict(zip(ids.tolist(), scores.tolist(), strict=True)) == pytest.approx(expected)
        assert ids.tolist() == [1, 3, 2, 4]

    def test_it_ranks_by_how_far_above_the_rest_not_by_rank(self) -> None:
        # X is near the top of both retrievers; Y tops BM25 but the vector index scores it
        # with the junk. RRF sees ranks 2+2 against 1+3 and puts Y first; z-score sees that X
        # stands out in both, which is the shipped default's reason (SciFact train +0.012).
        x, y, z, a, b, c = 1, 2, 3, 4, 5, 6
        bm25 = ranking(y, x, a, b, c, scores=[10.0, 9.9, 5.0, 5.0, 5.0])
        vector = ranking(z, x, y, a, b, scores=[0.9, 0.89, 0.5, 0.5, 0.5])
        rrf_ids, _ = reciprocal_rank_fusion([bm25, vector], [1.0, 1.0])
        assert rrf_ids.tolist()[0] == y
        z_ids, _ = zscore_fusion([bm25, vector], [1.0, 1.0])
        assert z_ids.tolist()[0] == x

    def test_weights_ties_and_fuse_dispatch(self) -> None:
        ids, scores = zscore_fusion([ranking(5, 4, scores=[2.0, 2.0])], [1.0])
        assert ids.tolist() == [4, 5]
        assert scores.tolist() == [0.0, 0.0]
        ids, _ = zscore_fusion([ranking(1, 2), ranking(2, 1)], [1.0, 0.0])
        assert ids.tolist() == [1, 2]
        ids, _ = fuse([ranking(1, 2), ranking(2, 1)], [1.0, 3.0], method="zscore")
        assert ids.tolist() == [2, 1]
        assert zscore_fusion([], [])[0].size == 0
        with pytest.raises(ValueError, match="weights"):
            zscore_fusion([ranking(1)], [1.0, 1.0])


def cand(chunk_id: int, document_id: int, text: str, score: float | None = None) -> Candidate:
    return Candidate(
        chunk_id=chunk_id,
        document_id=document_id,
        score=score if score is not None else 100.0 - chunk_id,
        title=f"doc {document_id}",
        text=text,
        heading_path=(),
    )


class TestDeduplicator:
    def test_near_identical_chunks_are_kept_once(self) -> None:
        d = Deduplicator(max_per_document=0, threshold=0.9)
        assert d.offer(cand(1, 1, "Annual leave is 25 days for every employee.")) == "kept"
        # Same tokens: case, punctuation and stop words differ.
        assert d.offer(cand(2, 2, "ANNUAL LEAVE: 25 days, for each and every employee")) == (
            "duplicate"
        )
        assert d.offer(cand(3, 3, "Sick leave needs a doctor's note after three days.")) == "kept"
        # A chunk already offered is never kept twice.
        assert d.offer(cand(1, 1, "Annual leave is 25 days for every employee.")) == "duplicate"
        assert [c.chunk_id for c in d.kept] == [1, 3]

    def test_threshold_is_a_jaccard_bound(self) -> None:
        a = frozenset(f"w{n}" for n in range(10))
        b = frozenset(f"w{n}" for n in range(1, 11))  # 9 shared of 11
        assert jaccard(a, b) == pytest.approx(9 / 11)
        assert jaccard(frozenset(), frozenset()) == 1.0
        strict = Deduplicator(max_per_document=0, threshold=0.9)
        loose = Deduplicator(max_per_document=0, threshold=0.8)
        for d in (strict, loose):
            d.offer(cand(1, 1, " ".join(sorted(a))))
        assert strict.offer(cand(2, 2, " ".join(sorted(b)))) == "kept"
        assert loose.offer(cand(2, 2, " ".join(sorted(b)))) == "duplicate"

    def test_zero_threshold_keeps_duplicates(self) -> None:
        d = Deduplicator(max_per_document=0, threshold=0)
        assert d.offer(cand(1, 1, "same words")) == "kept"
        assert d.offer(cand(2, 2, "same words")) == "kept"

    def test_documents_are_capped_and_backfilled_only_on_demand(self) -> None:
        d = Deduplicator(max_per_document=2, threshold=0.9)
        texts = ["alpha one", "bravo two", "charlie three", "delta four", "echo five"]
        decisions = [d.offer(cand(i + 1, 1, t)) for i, t in enumerate(texts[:4])]
        decisions.append(d.offer(cand(5, 2, texts[4])))
        assert decisions == ["kept", "kept", "capped", "capped", "kept"]
        assert [c.chunk_id for c in d.kept] == [1, 2, 5]
        added = d.backfill(1)
        assert [c.chunk_id for c in added] == [3]
        # Back in rank order (chunk 3 outranks chunk 5).
        assert [c.chunk_id for c in d.kept] == [1, 2, 3, 5]
        assert [c.chunk_id for c in d.held_back] == [4]

    def test_backfill_skips_near_duplicates(self) -> None:
        d = Deduplicator(max_per_document=1, threshold=0.9)
        d.offer(cand(1, 1, "the same paragraph text"))
        assert d.offer(cand(2, 1, "different words entirely")) == "capped"
        assert d.offer(cand(3, 1, "The same paragraph text!")) == "duplicate"
        assert [c.chunk_id for c in d.backfill(5)] == [2]
