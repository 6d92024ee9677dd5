"""The encryption benchmark's structure at a tiny size (not its speed): both tenants load and
answer alike, the sealed one is really sealed, and the section is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench.encryption import bench_encryption
from app.kit.settings import Settings


@pytest.mark.slow
def test_bench_encryption_reports_off_and_on(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    result = bench_encryption(
        Settings(environment="test", data_dir=tmp_path / "unused"),
        chunks=1_000,
        queries=10,
        loads=2,
        documents=4,
        corpus=None,
        output=output,
    )
    assert result.sealed_rows == 1_000
    assert result.sealed_shards == 2  # one vector and one BM25 file
    assert {s: len(v) for s, v in result.load_seconds.items()} == {"off": 2, "on": 2}
    assert set(result.search) == {"off", "on"}
    assert set(result.search["on"]) == {"bm25", "vector", "hybrid"}
    assert [len(result.ingest[s]) for s in ("off", "on")] == [2, 2]
    assert result.ingest["off"][0].chunks == result.ingest["on"][0].chunks > 0
    text = output.read_text()
    assert "<!-- bench:encryption -->" in text
    assert "- Command: `cairn bench encryption --chunks 1000 --queries 10 --loads 2" in text
    assert "| shard load, cold (median of 2), s |" in text
    assert "ingestion: pipeline ÷ raw embedder (same run, mean)" in text
