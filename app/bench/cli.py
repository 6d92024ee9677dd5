"""`cairn bench ...`: each benchmark is a command here; results go to BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(
    help="Measure on this machine and record in BENCHMARKS.md.", no_args_is_help=True
)

Output = Annotated[Path, typer.Option(help="the Markdown file to record results in")]


@bench_app.command("ingest")
def ingest(
    documents: Annotated[int, typer.Option(min=1, help="how many documents")] = 300,
    corpus: Annotated[
        Path | None, typer.Option(help="BEIR corpus.jsonl to take documents from")
    ] = None,
    output: Output = Path("BENCHMARKS.md"),
) -> None:
    """Documents and chunks per second end to end, beside the raw embedder on the same chunks."""
    from app.bench.ingest import DEFAULT_CORPUS, bench_ingest
    from app.kit.settings import get_settings

    result = bench_ingest(
        get_settings(), documents=documents, corpus=corpus or DEFAULT_CORPUS, output=output
    )
    typer.echo(result.markdown())


@bench_app.command("generate")
def generate(
    max_new_tokens: Annotated[int, typer.Option(min=1, help="new tokens per answer")] = 64,
    llamacpp: Annotated[
        bool, typer.Option(help="also measure llama.cpp when llama-cpp-python is installed")
    ] = True,
    output: Output = Path("BENCHMARKS.md"),
) -> None:
    """Tokens/s, time to first token and peak memory: fp32 vs int8 (and llama.cpp)."""
    from app.bench.generate import bench_generate
    from app.kit.settings import get_settings

    body = bench_generate(
        get_settings(), max_new_tokens=max_new_tokens, llamacpp=llamacpp, output=output
    )
    typer.echo(body)


@bench_app.command("search")
def search(
    sizes: Annotated[
        str, typer.Option(help="comma-separated corpus sizes in chunks, one tenant each")
    ] = "100000,1000000",
    queries: Annotated[int, typer.Option(min=1, help="queries timed per size and mode")] = 200,
    http_requests: Annotated[
        int, typer.Option(min=0, help="HTTP requests per mode at concurrency 8 (0: skip)")
    ] = 200,
    embed_queries: Annotated[
        int, typer.Option(min=0, help="queries embedded to time the embedder (0: skip)")
    ] = 100,
    output: Output = Path("BENCHMARKS.md"),
) -> None:
    """Search p50/p95/p99 and HTTP throughput beside the raw FAISS and BM25 calls."""
    from app.bench.search import bench_search
    from app.kit.settings import get_settings

    try:
        parsed = [int(s.replace("_", "")) for s in sizes.split(",") if s.strip()]
    except ValueError as exc:
        raise typer.BadParameter("sizes must be integers, e.g. 100000,1000000") from exc
    if not parsed or min(parsed) < 1:
        raise typer.BadParameter("sizes must be positive")
    result = bench_search(
        get_settings(),
        sizes=parsed,
        queries=queries,
        http_requests=http_requests,
        embed_queries=embed_queries,
        output=output,
    )
    typer.echo(result.markdown())
