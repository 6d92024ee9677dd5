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
    disabled_chunks: Annotated[
        int,
        typer.Option(min=0, help="chunks of each tenant disabled first, as a curator would"),
    ] = 0,
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
        disabled=disabled_chunks,
    )
    typer.echo(result.markdown())


def _integers(text: str, name: str, *, minimum: int, maximum: int = 10_000) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be comma-separated integers") from exc
    if not values or min(values) < minimum or max(values) > maximum:
        raise typer.BadParameter(f"{name} must be integers from {minimum} to {maximum}")
    return values


@bench_app.command("serve")
def serve(
    documents: Annotated[
        int, typer.Option(min=1, help="short documents searched (and asked about)")
    ] = 60,
    search_requests: Annotated[
        int, typer.Option(min=0, help="search requests per row (0: skip the search rows)")
    ] = 200,
    concurrency: Annotated[str, typer.Option(help="comma-separated client counts")] = "8,32",
    postgres_url: Annotated[
        str | None,
        typer.Option(help="a PostgreSQL database to create a scratch database beside"),
    ] = "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    redis_url: Annotated[
        str | None, typer.Option(help="Redis for the broker, limits and caches")
    ] = "redis://127.0.0.1:6379/14",
    chat_answers: Annotated[
        int, typer.Option(min=0, max=8, help="distinct chat questions, cold then warm (0: skip)")
    ] = 4,
    bulk_documents: Annotated[
        int, typer.Option(min=0, help="documents ingested during the interactive rows (0: skip)")
    ] = 120,
    interactive_searches: Annotated[int, typer.Option(min=1)] = 40,
    interactive_chats: Annotated[int, typer.Option(min=1)] = 4,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="per chat answer")] = 16,
    nice: Annotated[
        str, typer.Option(help="worker.ingest_nice values compared under ingestion")
    ] = "0,10",
    output: Output = Path("BENCHMARKS.md"),
) -> None:
    """Search req/s and p95 (1 vs 2 API processes), chat with the answer cache cold and warm,
    and search/chat latency while a bulk ingestion runs, against idle."""
    import sys

    from app.bench.serve import bench_serve
    from app.kit.settings import get_settings

    result = bench_serve(
        models_dir=get_settings().models_dir,
        documents=documents,
        search_requests=search_requests,
        concurrencies=_integers(concurrency, "concurrency", minimum=1, maximum=256),
        postgres_url=postgres_url or None,
        redis_url=redis_url or None,
        chat_answers=chat_answers,
        bulk_documents=bulk_documents,
        interactive_searches=interactive_searches,
        interactive_chats=interactive_chats,
        max_new_tokens=max_new_tokens,
        nices=_integers(nice, "nice", minimum=0, maximum=19),
        output=output,
        command="cairn bench " + " ".join(sys.argv[sys.argv.index("serve") :])
        if "serve" in sys.argv
        else "cairn bench serve",
    )
    typer.echo(result.markdown())


@bench_app.command("encryption")
def encryption(
    chunks: Annotated[int, typer.Option(min=100, help="chunks per tenant")] = 100_000,
    queries: Annotated[int, typer.Option(min=1, help="queries timed per mode and state")] = 200,
    loads: Annotated[int, typer.Option(min=1, help="cold shard loads per state")] = 3,
    documents: Annotated[
        int, typer.Option(min=0, help="documents ingested per state (0: skip)")
    ] = 60,
    corpus: Annotated[
        Path | None, typer.Option(help="BEIR corpus.jsonl to take documents from")
    ] = None,
    output: Output = Path("BENCHMARKS.md"),
) -> None:
    """Encryption at rest off against on, in one run: cold shard loads and search latency at
    CHUNKS chunks, sealing throughput, ingestion throughput."""
    from app.bench.encryption import bench_encryption
    from app.bench.ingest import DEFAULT_CORPUS
    from app.kit.settings import get_settings

    result = bench_encryption(
        get_settings(),
        chunks=chunks,
        queries=queries,
        loads=loads,
        documents=documents,
        corpus=corpus or DEFAULT_CORPUS,
        output=output,
    )
    typer.echo(result.markdown())


@bench_app.command("all")
def run_all(
    documents: Annotated[int, typer.Option(min=1, help="documents ingested")] = 20,
    size: Annotated[int, typer.Option(min=1, help="chunks of the search corpus")] = 10_000,
    queries: Annotated[int, typer.Option(min=1, help="queries timed per mode")] = 100,
    http_requests: Annotated[
        int, typer.Option(min=0, help="HTTP search requests per mode (0: skip)")
    ] = 50,
    output: Annotated[Path, typer.Option(help="the Markdown file to record results in")] = Path(
        "bench-results.md"
    ),
) -> None:
    """The quick benches in sequence (what `make bench` runs, a few minutes on 2 cores):
    ingestion, then search on a small synthetic corpus. Recorded in a file of their own, so
    BENCHMARKS.md keeps its full-size figures; `cairn bench generate` needs the model and
    `cairn bench serve` PostgreSQL and Redis, so they run on their own."""
    typer.echo(f"== cairn bench ingest --documents {documents}")
    ingest(documents=documents, corpus=None, output=output)
    typer.echo(f"\n== cairn bench search --sizes {size} --queries {queries}")
    search(
        sizes=str(size),
        queries=queries,
        http_requests=http_requests,
        embed_queries=min(queries, 20),
        output=output,
    )
    typer.echo(f"\nrecorded in {output}")
