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
