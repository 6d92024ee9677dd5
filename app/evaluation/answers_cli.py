"""`cairn eval answers DATASET_DIR`: answer quality (app/evaluation/answers.py), recorded in
BENCHMARKS.md and in a per-question JSONL log per variant."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer


def answers_command(
    dataset_dir: Annotated[
        Path,
        typer.Argument(help="BEIR folder with answers.jsonl (gold spans per query id)"),
    ],
    tenant: Annotated[
        str, typer.Option(help="tenant to load the corpus into (created if missing)")
    ] = "eval-answers",
    sample: Annotated[
        int | None, typer.Option(min=1, help="ask this many questions (seeded sample)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the sample")] = 16,
    distractors: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="load only the sampled questions' passages and this many others (default: "
            "the whole corpus)",
        ),
    ] = None,
    reuse: Annotated[
        bool,
        typer.Option(
            help="a prompt generated before (this run or an earlier one, kept in the log "
            "folder) reuses that generation and its recorded time: post-generation levers "
            "compared on identical text"
        ),
    ] = False,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME[:section.key=value,...]: settings overrides for one run; repeat to "
            "compare (same process, same corpus, shared model); default: the configuration"
        ),
    ] = None,
    variant_minutes: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=10_000,
            help="stop each variant's questions after this many minutes (it asks at least "
            "one); the table then adds the longer variants scored on the same first questions",
        ),
    ] = None,
    log_dir: Annotated[
        Path | None,
        typer.Option(help="per-question JSONL logs (default: DATA_DIR/eval)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="record the tables in this Markdown file")
    ] = None,
) -> None:
    """Ask a sample of a QA dataset's questions through the answer service and report
    gold-span, gold-passage-cited, unsupported, grounded-but-wrong and refusal rates and the
    median time per answer."""
    from rich.progress import Progress

    from app.bench.report import machine_description, section, write_section
    from app.evaluation.answers import (
        apply_overrides,
        corpus_subset,
        evaluate_answers,
        load_gold,
        markdown,
        parse_variant,
    )
    from app.evaluation.answers import sample_queries as pick
    from app.evaluation.beir import DatasetError, load_beir
    from app.kit.migrate import ensure_embedded_schema
    from app.kit.public_ids import configure_public_ids
    from app.kit.settings import get_settings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        dataset = load_beir(dataset_dir)
        gold = load_gold(dataset_dir)
        variants = [parse_variant(v) for v in (variant or ["configured"])]
    except (DatasetError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_embedded_schema(settings.resolved_database_url)
    # Answers are audited like any other (audit entries carry public ids).
    configure_public_ids(settings.secret("audit_secret"))
    for name, overrides in variants:
        try:
            apply_overrides(settings, overrides)
        except ValueError as exc:  # names no setting, or a value the setting refuses
            typer.echo(f"error: variant {name}: {exc}", err=True)
            raise typer.Exit(code=1) from exc
    query_ids = pick(dataset, gold, size=sample, seed=seed)
    dataset = corpus_subset(dataset, query_ids, distractors=distractors, seed=seed)
    with Progress(disable=not sys.stderr.isatty()) as progress:
        report = asyncio.run(
            evaluate_answers(
                settings,
                dataset,
                gold,
                tenant=tenant,
                query_ids=query_ids,
                variants=variants,
                log_dir=log_dir or settings.data_dir / "eval",
                reuse=reuse,
                progress=progress,
                variant_seconds=variant_minutes * 60 if variant_minutes is not None else None,
            )
        )
    table = markdown(report.metrics)
    stopped = "".join(
        f"\nVariant {name} stopped after {n} of {report.sampled} questions "
        f"(--variant-minutes {variant_minutes:g})."
        for name, n in report.stopped.items()
    )
    table += stopped
    typer.echo(table)
    typer.echo("")
    typer.echo(report.settings_table())
    for log in report.logs:
        typer.echo(f"log: {log}")
    if output is not None:
        command = "cairn eval answers " + shlex.join(
            [str(a) for a in sys.argv[3:]] if sys.argv[1:3] == ["eval", "answers"] else []
        )
        body = (
            f"Dataset `{dataset.name}`: {report.documents} passages in the tenant, "
            f"{report.sampled} questions (seed {seed}) asked through the answer service; "
            f"machine: {machine_description()}.\n\n{table}\n\nSettings per variant:\n\n"
            f"{report.settings_table()}"
        )
        write_section(
            output, "eval-answers", section(f"Answer quality: {dataset.name}", command, body)
        )
