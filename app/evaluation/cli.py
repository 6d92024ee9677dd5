"""`cairn eval DATASET_DIR --tenant T`: retrieval quality per mode, recorded in BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

# Published BM25 figures for comparison (BEIR, Thakur et al. 2021, Table 2 and Appendix).
PUBLISHED = {
    "scifact": {"published BM25 (BEIR paper, Elasticsearch)": ("0.665", "0.908", "n/a")},
}


def eval_command(
    dataset_dir: Annotated[
        Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    ],
    tenant: Annotated[
        str, typer.Option(help="tenant to load the corpus into (created if missing)")
    ],
    mode: Annotated[
        Literal["all", "bm25", "vector", "hybrid"], typer.Option(help="retrieval mode(s)")
    ] = "all",
    output: Annotated[
        Path | None, typer.Option(help="record the table in this Markdown file")
    ] = Path("BENCHMARKS.md"),
) -> None:
    """Ingest a BEIR dataset and report nDCG@10, Recall@100 and MRR@10 per mode."""
    from app.bench.report import section, write_section
    from app.evaluation.beir import DatasetError, load_beir
    from app.evaluation.runner import MODES, run_eval
    from app.kit.migrate import ensure_embedded_schema
    from app.kit.settings import get_settings

    try:
        dataset = load_beir(dataset_dir)
    except DatasetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    modes = MODES if mode == "all" else (mode,)
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_embedded_schema(settings.resolved_database_url)
    report = run_eval(settings, dataset, tenant=tenant, modes=modes)
    published = PUBLISHED.get(dataset.name.lower(), {})
    table = report.markdown(published)
    typer.echo(table)
    if output is not None:
        body = (
            f"Dataset `{dataset.name}`: {report.documents} documents, {report.queries} test "
            f"queries; embedding model `{report.embedder}`; one hit per document in the "
            f"ranking; loading the corpus took {report.ingest_seconds:.0f} s; query embedding "
            f"{report.embed_ms_per_query:.0f} ms/query (not in ms/query below).\n\n{table}"
        )
        command = f"cairn eval {dataset_dir} --tenant {tenant}" + (
            "" if mode == "all" else f" --mode {mode}"
        )
        write_section(
            output,
            f"eval-{dataset.name}",
            section(f"Retrieval quality: {dataset.name}", command, body),
        )
