"""Merging per-shard top-k results into one ranking (shared by vector and BM25 search)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from app.search.index.errors import ShardError

ScoreArray = npt.NDArray[np.floating]
IdArray = npt.NDArray[np.int64]

#: FAISS marks an empty result slot with id -1.
MISSING_ID = -1


def _rank_row(scores: npt.NDArray[np.floating], ids: IdArray, k: int) -> tuple[ScoreArray, IdArray]:
    """Best k of one row: drop -1 ids, sort by score desc then id asc, keep an id once."""
    keep = ids != MISSING_ID
    scores, ids = scores[keep], ids[keep]
    # lexsort uses the last key as the primary one: score descending, then id ascending,
    # so equal scores come out in the same order whatever the shard order was.
    order = np.lexsort((ids, -scores))
    scores, ids = scores[order], ids[order]
    if ids.size:
        # A chunk lives in one shard, but during a shard move it may briefly be in two:
        # keep its first (best) occurrence only.
        _, first = np.unique(ids, return_index=True)
        if first.size != ids.size:
            first.sort()
            scores, ids = scores[first], ids[first]
    return scores[:k], ids[:k]


def merge_results(
    per_shard: Sequence[tuple[npt.NDArray[np.floating], npt.NDArray[np.integer]]], k: int
) -> tuple[ScoreArray, IdArray]:
    """Merge per-shard ``(scores, ids)`` into the global top ``k`` (higher score is better).

    Inputs are either all 1-D (one query; the output is 1-D with at most ``k`` hits, no
    padding) or all 2-D ``(nq, k_i)`` (the output is ``(nq, k)`` padded with id -1 and score
    -inf, like FAISS). Ids equal to -1 are dropped, ties are broken by ascending id so the
    result does not depend on shard order, and an id appearing twice is kept once. An empty
    ``per_shard`` gives empty 1-D arrays.
    """
    if k < 1:
        raise ShardError(f"k must be >= 1, got {k}")
    if not per_shard:
        return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
    ndims = {np.ndim(scores) for scores, _ in per_shard}
    if len(ndims) != 1 or ndims.pop() not in (1, 2):
        raise ShardError("merge_results needs all-1-D or all-2-D score arrays")
    dtype = np.result_type(*(np.asarray(scores).dtype for scores, _ in per_shard))
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float64)
    pairs = []
    for scores, ids in per_shard:
        s, i = np.asarray(scores, dtype=dtype), np.asarray(ids, dtype=np.int64)
        if s.shape != i.shape:
            raise ShardError(f"scores shape {s.shape} != ids shape {i.shape}")
        pairs.append((s, i))

    if pairs[0][0].ndim == 1:
        return _rank_row(
            np.concatenate([s for s, _ in pairs]), np.concatenate([i for _, i in pairs]), k
        )

    nq = pairs[0][0].shape[0]
    if any(s.shape[0] != nq for s, _ in pairs):
        raise ShardError("all shards must return the same number of query rows")
    all_scores = np.concatenate([s for s, _ in pairs], axis=1)
    all_ids = np.concatenate([i for _, i in pairs], axis=1)
    out_scores = np.full((nq, k), -np.inf, dtype=dtype)
    out_ids = np.full((nq, k), MISSING_ID, dtype=np.int64)
    for row in range(nq):
        s, i = _rank_row(all_scores[row], all_ids[row], k)
        out_scores[row, : s.size] = s
        out_ids[row, : i.size] = i
    return out_scores, out_ids
