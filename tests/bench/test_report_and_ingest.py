"""BENCHMARKS.md upkeep and the ingest benchmark's own consistency (not its speed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench.ingest import bench_ingest, corpus_documents
from app.bench.report import section, write_section
from app.kit.settings import Settings


def test_write_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    write_section(path, "ingest", "## Ingest\n\nfirst")
    write_section(path, "search", "## Search\n\nfast")
    write_section(path, "ingest", section("Ingest", "cairn bench ingest", "second"))
    text = path.read_text()
    assert text.startswith("# Benchmarks")
    assert "first" not in text
    assert "second" in text
    assert "fast" in text
    assert text.count("<!-- bench:ingest -->") == 1
    assert "- Command: `cairn bench ingest`" in text
    assert "cores" in text  # the machine is described


def test_corpus_documents_read_beir_or_generate(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"_id": "d1", "title": "Valves", "text": "Turn the brass valve."}\n'
        '{"_id": "d2", "title": "", "text": "Pumps hum."}\n'
    )
    assert corpus_documents(corpus, 5) == [
        ("d1.md", "# Valves\n\nTurn the brass valve.\n"),
        ("d2.md", "# d2\n\nPumps hum.\n"),
    ]
    generated = corpus_documents(None, 3)
    assert len(generated) == 3
    assert len({body for _, body in generated}) == 3


@pytest.mark.slow
def test_bench_ingest_runs_the_real_pipeline(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    result = bench_ingest(
        Settings(environment="test", data_dir=tmp_path / "unused"),
        documents=3,
        corpus=None,
        output=output,
    )
    assert result.documents == 3
    assert result.chunks >= 3
    assert result.raw_seconds > 0
    assert result.pipeline_seconds > 0
    text = output.read_text()
    assert "pipeline / raw embedder" in text
    assert "cairn bench ingest --documents 3" in text
