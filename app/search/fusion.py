"""Fusing the rankings of several retrievers (BM25, vector) into one: pure functions.

A ranking is ``(scores, ids)``, best first, ids unique (what ``merge_results`` returns). The
fused ranking is sorted by fused score descending, then chunk id ascending, so equal inputs
always give the same order whatever the order of the shards or of the retrievers' ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

IdArray = npt.NDArray[np.int64]
ScoreArray = npt.NDArray[np.float64]
Ranking = tuple[npt.NDArray[np.floating], npt.NDArray[np.integer]]
FusionMethod = Literal["rrf", "weighted", "zscore"]

__all__ = [
    "FusionMethod",
    "fuse",
    "reciprocal_rank_fusion",
    "weighted_score_fusion",
    "zscore_fusion",
]


def _check(rankings: Sequence[Ranking], weights: Sequence[float]) -> None:
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    if any(w < 0 for w in weights):
        raise ValueError("fusion weights must be >= 0")
    for scores, ids in rankings:
        if np.shape(scores) != np.shape(ids) or np.ndim(ids) != 1:
            raise ValueError("each ranking must be 1-D scores and ids of the same length")


def _sorted(totals: dict[int, float]) -> tuple[IdArray, ScoreArray]:
    if not totals:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    ids = np.fromiter(totals.keys(), dtype=np.int64, count=len(totals))
    scores = np.fromiter(totals.values(), dtype=np.float64, count=len(totals))
    # lexsort: last key is primary — score descending, then id ascending.
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order]


def reciprocal_rank_fusion(
    rankings: Sequence[Ranking], weights: Sequence[float], k: float = 60.0
) -> tuple[IdArray, ScoreArray]:
    """Σ weight / (k + rank) over the rankings an id appears in (rank starts at 1).

    Only ranks matter, so retrievers with incomparable score scales (BM25 sums, cosines) mix
    without tuning; ``k`` damps the advantage of the very first ranks (60 in the RRF paper).
    """
    if k <= 0:
        raise ValueError("rrf k must be > 0")
    _check(rankings, weights)
    totals: dict[int, float] = {}
    for (_, ids), weight in zip(rankings, weights, strict=True):
        if weight == 0:
            continue
        for rank, chunk_id in enumerate(np.asarray(ids, dtype=np.int64).tolist(), start=1):
            totals[chunk_id] = totals.get(chunk_id, 0.0) + weight / (k + rank)
    return _sorted(totals)


def _min_max(scores: npt.NDArray[np.floating]) -> ScoreArray:
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high <= low:
        # One candidate, or all tied: each counts fully.
        return np.ones_like(values)
    return (values - low) / (high - low)


def weighted_score_fusion(
    rankings: Sequence[Ranking], weights: Sequence[float]
) -> tuple[IdArray, ScoreArray]:
    """Σ weight * min-max-normalised score; an id missing from a ranking gets 0 there.

    Normalisation is over each ranking's own candidates, so a retriever's best candidate
    always scores 1 and its last 0, whatever the raw scale.
    """
    _check(rankings, weights)
    totals: dict[int, float] = {}
    for (scores, ids), weight in zip(rankings, weights, strict=True):
        if weight == 0:
            continue
        normalised = _min_max(scores)
        for chunk_id, value in zip(
            np.asarray(ids, dtype=np.int64).tolist(), normalised.tolist(), strict=True
        ):
            totals[chunk_id] = totals.get(chunk_id, 0.0) + weight * value
    return _sorted(totals)


def _z(scores: npt.NDArray[np.floating]) -> ScoreArray:
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return values
    std = float(values.std())
    if std == 0.0:
        # One candidate, or all tied: nothing to tell them apart by, each is average.
        return np.zeros_like(values)
    return (values - float(values.mean())) / std


def zscore_fusion(
    rankings: Sequence[Ranking], weights: Sequence[float]
) -> tuple[IdArray, ScoreArray]:
    """Σ weight * z-score, each ranking standardised over its own candidates.

    Each ranking is scaled by the spread of all its candidates rather than by its two
    extremes (min-max), so its last candidate does not define its zero. An id
    missing from a ranking gets that ranking's lowest z-score (it scored no better than the
    last candidate there; its true score is unknown but below the cut).
    """
    _check(rankings, weights)
    parts: list[tuple[list[int], list[float], float, float]] = []
    for (scores, ids), weight in zip(rankings, weights, strict=True):
        if weight == 0 or np.size(ids) == 0:
            continue
        z = _z(scores)
        parts.append((np.asarray(ids, dtype=np.int64).tolist(), z.tolist(), float(z.min()), weight))
    seen: set[int] = set()
    for ids_list, _, _, _ in parts:
        seen.update(ids_list)
    # Every id starts with every ranking's floor; a ranking it appears in replaces its own.
    base = sum(weight * floor for _, _, floor, weight in parts)
    totals = dict.fromkeys(seen, base)
    for ids_list, z_list, floor, weight in parts:
        for chunk_id, value in zip(ids_list, z_list, strict=True):
            totals[chunk_id] += weight * (value - floor)
    return _sorted(totals)


def fuse(
    rankings: Sequence[Ranking],
    weights: Sequence[float],
    *,
    method: FusionMethod = "rrf",
    rrf_k: float = 60.0,
) -> tuple[IdArray, ScoreArray]:
    """The fused ranking ``(ids, scores)`` by the configured method."""
    if method == "rrf":
        return reciprocal_rank_fusion(rankings, weights, rrf_k)
    if method == "weighted":
        return weighted_score_fusion(rankings, weights)
    if method == "zscore":
        return zscore_fusion(rankings, weights)
    raise ValueError(f"unknown fusion method {method!r}")
