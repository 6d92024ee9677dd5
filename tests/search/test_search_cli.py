"""`cairn search` on the console: public ids, and scores that say what they are (a lone
hybrid candidate's z-score is 0, which once printed as a bare 0.0000)."""

from __future__ import annotations

import pytest

from app.kit import public_ids
from app.kit.public_ids import IdKind, PublicIds
from app.kit.settings import RerankSettings, SearchSettings
from app.search.cli import format_hits, score_kind
from app.search.schemas import SearchHit, SearchResponse

SECRET = "s" * 48


@pytest.fixture(autouse=True)
def ids(monkeypatch: pytest.MonkeyPatch) -> PublicIds:
    codec = PublicIds(SECRET)
    monkeypatch.setattr(public_ids, "_current", codec)
    return codec


def response(*scores: float) -> SearchResponse:
    hits = [
        SearchHit(
            chunk_id=100 + n,
            document_id=7,
            title="Handbook",
            text="Every employee receives 25 days of paid leave.",
            score=score,
            heading_path=["Leave"],
            sensitivity="internal",
        )
        for n, score in enumerate(scores)
    ]
    return SearchResponse(hits=hits, took_ms=3.25)


def test_hits_show_public_ids_never_keys(ids: PublicIds) -> None:
    text = format_hits(response(1.5), kind=score_kind("bm25", SearchSettings()))
    first = text.splitlines()[0]
    assert ids.encode(IdKind.DOCUMENT, 7) in first
    assert ids.encode(IdKind.CHUNK, 100) in first
    assert "document 7" not in text
    assert "chunk 100" not in text


def test_a_lone_hybrid_hit_is_explained_not_zeroed() -> None:
    text = format_hits(response(0.0), kind=score_kind("hybrid", SearchSettings()))
    lines = text.splitlines()
    assert lines[0].startswith("  1. z +0.000  Handbook › Leave  [doc_")
    assert "0.0000" not in text
    assert lines[-1].startswith("1 hit in 3.2 ms (z = BM25 and vector z-scores fused")
    assert "0 = an average or lone candidate" in lines[-1]


@pytest.mark.parametrize(
    ("mode", "search", "shown"),
    [
        ("hybrid", SearchSettings(), "z +1.235"),
        ("hybrid", SearchSettings(fusion="rrf"), "rrf 1.235"),
        ("bm25", SearchSettings(), "bm25 1.235"),
        ("vector", SearchSettings(), "cos 1.235"),
        (
            "hybrid",
            SearchSettings(rerank=RerankSettings(backend="cross-encoder", model_path="/m")),
            "rerank 1.235",
        ),
    ],
)
def test_each_score_is_tagged_with_its_kind(mode: str, search: SearchSettings, shown: str) -> None:
    assert f"  1. {shown}  " in format_hits(response(1.23456), kind=score_kind(mode, search))


def test_small_fused_scores_keep_their_digits() -> None:
    text = format_hits(response(0.0163934), kind=score_kind("hybrid", SearchSettings(fusion="rrf")))
    assert "rrf 0.01639" in text
