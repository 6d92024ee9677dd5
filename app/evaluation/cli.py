"""`cairn eval DATASET_DIR --tenant T`: retrieval quality per mode, recorded in BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperGroup

from app.evaluation.answers_cli import answers_command

# Published figures on the SciFact test split for comparison: BEIR (Thakur et al. 2021, Table 2
# and Appendix), Anserini/pyserini BEIR regressions and fusion experiments, MTEB (issue 15).
PUBLISHED = {
    "scifact": {
        "published BM25 (BEIR paper, Elasticsearch; Anserini multifield)": (
            "0.665",
            "0.908",
            "n/a",
        ),
        "published BM25 (Anserini flat, Porter-stemmed)": ("0.679", "n/a", "n/a"),
        "published multilingual-e5-small (MTEB)": ("0.677", "n/a", "n/a"),
        "published SPLADE++ / SPLADE-v3": ("0.704 / 0.714", "n/a", "n/a"),
        "published bge-small-en-v1.5": ("0.713", "n/a", "n/a"),
        "published BM25 + BGE-base fused, RRF / min-max (pyserini)": (
            "0.742 / 0.747",
            "n/a",
            "n/a",
        ),
    },
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
    split: Annotated[
        Literal["test", "train"],
        typer.Option(help="qrels/<split>.tsv, and queries-<split>.jsonl when the folder has one"),
    ] = "test",
    load: Annotated[
        bool,
        typer.Option(
            help="load the corpus first (--no-load: score the tenant as it is, e.g. after "
            "`cairn index rebuild` with other tokenizer settings; nothing is embedded again)"
        ),
    ] = True,
    direct: Annotated[
        bool,
        typer.Option(
            help="BM25 only, in memory, without a database or embedder: the product's chunker, "
            "tokenizer and shards over the corpus (seconds; for tokenizer settings)"
        ),
    ] = False,
) -> None:
    """Ingest a BEIR dataset and report nDCG@10, Recall@100 and MRR@10 per mode."""
    from app.bench.report import section, write_section
    from app.evaluation.beir import DatasetError, load_beir
    from app.evaluation.runner import MODES, retrieval_settings, run_eval
    from app.kit.files import secure_data_dir
    from app.kit.migrate import ensure_embedded_schema
    from app.kit.public_ids import configure_public_ids
    from app.kit.settings import get_settings

    try:
        dataset = load_beir(dataset_dir, split)
    except DatasetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    modes = MODES if mode == "all" else (mode,)
    settings = get_settings()
    if direct:
        if mode != "bm25":
            typer.echo("error: --direct scores BM25 only; add --mode bm25", err=True)
            raise typer.Exit(code=2)
        _direct(settings, dataset, dataset_dir, split, output)
        return
    secure_data_dir(settings.data_dir, settings.resolved_database_url)
    ensure_embedded_schema(settings.resolved_database_url)
    # A re-run meets its documents as duplicates, whose message names them by public id.
    configure_public_ids(settings.secret("audit_secret"))
    used = retrieval_settings(settings)
    typer.echo(f"settings: {used}")
    report = run_eval(settings, dataset, tenant=tenant, modes=modes, ingest=load)
    published = PUBLISHED.get(dataset.name.lower(), {}) if split == "test" else {}
    table = report.markdown(published)
    typer.echo(table)
    if output is not None:
        loaded = (
            f"loading the corpus took {report.ingest_seconds:.0f} s"
            if load
            else "corpus loaded earlier (--no-load)"
        )
        body = (
            f"Dataset `{dataset.name}`: {report.documents} documents, {report.queries} {split} "
            f"queries; embedding model `{report.embedder}`; one hit per document in the "
            f"ranking; {loaded}; query embedding "
            f"{report.embed_ms_per_query:.0f} ms/query (not in ms/query below).\n\n"
            f"Settings: `{used}`\n\n{table}"
        )
        command = (
            f"cairn eval {dataset_dir} --tenant {tenant}"
            + ("" if mode == "all" else f" --mode {mode}")
            + ("" if split == "test" else f" --split {split}")
            + ("" if load else " --no-load")
        )
        key = f"eval-{dataset.name}" + ("" if split == "test" else f"-{split}")
        write_section(
            output,
            key,
            section(f"Retrieval quality: {dataset.name} ({split})", command, body),
        )


def _direct(
    settings: Any, dataset: Any, dataset_dir: Path, split: str, output: Path | None
) -> None:
    from app.bench.report import section, write_section
    from app.evaluation.direct import direct_bm25
    from app.evaluation.runner import EvalReport, retrieval_settings

    used = retrieval_settings(settings)
    typer.echo(f"settings: {used}")
    report = EvalReport(dataset.name, len(dataset.corpus), len(dataset.queries), "none", 0.0)
    report.scores.append(direct_bm25(settings, dataset))
    table = report.markdown()
    typer.echo(table)
    if output is not None:
        body = (
            f"Dataset `{dataset.name}`: {report.documents} documents, {report.queries} {split} "
            "queries; BM25 over the product's chunks and tokenizer in memory (--direct: no "
            f"database, no embedder); one hit per document.\n\nSettings: `{used}`\n\n{table}"
        )
        command = f"cairn eval {dataset_dir} --tenant - --mode bm25 --direct" + (
            "" if split == "test" else f" --split {split}"
        )
        key = f"eval-{dataset.name}-direct" + ("" if split == "test" else f"-{split}")
        write_section(output, key, section(f"BM25 direct: {dataset.name} ({split})", command, body))


class _RetrievalByDefault(TyperGroup):
    """`cairn eval DATASET ...` stays the retrieval evaluation; `cairn eval answers ...` is
    the answer evaluation."""

    # Typed loosely: typer vendors its own click, whose types are private.
    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["retrieval", *args]
        return super().resolve_command(ctx, args)


eval_app = typer.Typer(
    cls=_RetrievalByDefault, help="Retrieval and answer quality.", no_args_is_help=True
)
eval_app.command("retrieval")(eval_command)
eval_app.command("answers")(answers_command)
