"""The search benchmark's structure and consistency at a tiny size (not its speed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench.search import Corpus, bench_search
from app.kit.settings import Settings
from app.search.index import tokenize


def test_generated_text_tokenizes_to_its_words() -> None:
    batch = Corpus(seed=3).batch(first_id=1, first_document=1, count=500)
    assert batch.ids.tolist() == list(range(1, 501))
    assert batch.document_ids[:11].tolist() == [1] * 10 + [2]
    for text, tokens in zip(batch.texts, batch.tokens, strict=True):
        assert tokenize(text) == tokens
    assert batch.vectors.shape == (500, 384)
    assert abs(float((batch.vectors**2).sum(axis=1).mean()) - 1.0) < 1e-4


@pytest.mark.slow
def test_bench_search_reports_and_agrees_with_raw_calls(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    result = bench_search(
        Settings(environment="test", data_dir=tmp_path / "unused"),
        sizes=[2_000],
        queries=20,
        http_requests=16,
        embed_queries=0,
        output=output,
    )
    (size,) = result.sizes
    assert size.build.chunks == 2_000
    assert size.build.documents == 200
    assert set(size.service) == {"bm25", "vector", "hybrid"}
    assert set(size.raw) == {"bm25", "vector", "hybrid", "slower"}
    assert size.raw["slower"].p50 <= size.raw["hybrid"].p50
    # Everything is visible, so the service's best hit is the raw index calls' best hit.
    assert size.agreement == {"bm25": 1.0, "vector": 1.0}
    assert all(t.errors == 0 for t in size.http.values())
    text = output.read_text()
    assert "<!-- bench:search -->" in text
    assert "- Command: `cairn bench search --sizes 2000 --queries 20" in text
    assert "service ÷ raw, hybrid" in text
    assert "service hybrid ÷ raw max(FAISS, BM25)" in text
    assert "HTTP hybrid, c=8" in text
    assert "Memory per million 384-d vectors" in text
