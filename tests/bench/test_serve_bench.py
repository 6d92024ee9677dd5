"""`cairn bench serve`: its arguments, its documents and its report (not its speed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.bench import serve as serve_bench
from app.bench.report import write_section
from app.bench.search import Latency, Throughput
from app.bench.serve import ServeBenchResult, corpus_documents, timed
from app.cli import app as cli


def _latency(p50: float, p95: float) -> Latency:
    return Latency(p50=p50, p95=p95, p99=p95, mean=p50)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake(**kwargs: Any) -> ServeBenchResult:
        calls.append(kwargs)
        return ServeBenchResult(documents=1, search_requests=0)

    monkeypatch.setattr(serve_bench, "bench_serve", fake)
    return calls


def test_arguments_reach_the_bench(recorded: list[dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    result = CliRunner().invoke(
        cli,
        ["bench", "serve", "--concurrency", "8, 32", "--nice", "0,19", "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    (call,) = recorded
    assert call["concurrencies"] == [8, 32]
    assert call["nices"] == [0, 19]
    assert call["output"] == out
    assert call["command"].startswith("cairn bench serve")


@pytest.mark.parametrize(
    ("option", "value"),
    [("--concurrency", "8,x"), ("--concurrency", "0"), ("--nice", "20"), ("--nice", "")],
)
def test_bad_lists_are_refused(recorded: list[dict[str, Any]], option: str, value: str) -> None:
    result = CliRunner().invoke(cli, ["bench", "serve", option, value])
    assert result.exit_code == 2, result.output
    assert option.removeprefix("--") in result.output
    assert recorded == []


def test_corpus_documents_skip_and_cut(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": str(n), "title": f"T{n}", "text": "word " * 50}) + "\n"
            for n in range(4)
        )
    )
    docs = corpus_documents(corpus, 2, skip=1, chars=20)
    assert [d.split(b"\n", 1)[0] for d in docs] == [b"# T1", b"# T2"]
    assert all(len(d) < 40 for d in docs)
    with pytest.raises(ValueError, match="fewer than"):
        corpus_documents(corpus, 4, skip=1)


async def test_timed_counts_every_request_and_its_errors() -> None:
    sent: list[int] = []

    async def send(i: int) -> httpx.Response:
        sent.append(i)
        return httpx.Response(200 if i % 4 else 503)

    result = await timed(send, 10, 3)
    assert sorted(sent) == list(range(10))
    assert result.requests == 10
    assert result.errors == 3  # 0, 4, 8


def test_report_rows_ratios_and_targets(tmp_path: Path) -> None:
    result = ServeBenchResult(documents=60, search_requests=100, bulk_documents=120)
    result.max_new_tokens = 16
    result.search[("embedded SQLite, 1 process", 8)] = Throughput(100, 4.0, _latency(70, 120), 0)
    result.search[("PostgreSQL + Redis, 2 API processes", 32)] = Throughput(
        100, 2.0, _latency(50, 90), 1
    )
    result.interactive[(10, "idle", "search")] = _latency(40, 100)
    result.interactive[(10, "ingesting", "search")] = _latency(60, 150)
    result.interactive[(10, "idle after", "search")] = _latency(50, 120)
    result.interactive[(0, "idle", "chat")] = _latency(2000, 2500)
    result.interactive[(0, "ingesting", "chat")] = _latency(5000, 6000)
    result.busy_counts = {0: (400, 5, 120.0), 10: (800, 9, 250.0)}
    result.chat_cache_note = "Not measured: no cache."
    text = result.markdown()
    assert "| embedded SQLite, 1 process | 8 | 25.0 | 70 | 120 | 0 |" in text
    assert "| PostgreSQL + Redis, 2 API processes | 32 | 50.0 | 50 | 90 | 1 |" in text
    # Against the idle server at the end when it was measured, else the one before the bulk.
    assert "| 10 | search | 40 / 100 | 60 / 150 | 50 / 120 | 1.25× | 1.50× | met |" in text
    assert "| 0 | chat | 2000 / 2500 | 5000 / 6000 | — | 2.40× | 2.40× | missed |" in text
    assert "Not measured: no cache." in text
    assert "nice 0: 400 searches and 5 chats over 120 s" in text
    path = tmp_path / "BENCHMARKS.md"
    write_section(path, "serve", text)
    assert path.read_text().count("<!-- bench:serve -->") == 1
