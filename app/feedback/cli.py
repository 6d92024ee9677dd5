"""`cairn feedback export SLUG --out DIR` (registered in app/cli.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from app.feedback.export import ExportSummary, export_feedback
from app.kit.console import prepared
from app.kit.settings import Settings, get_settings

feedback_app = typer.Typer(help="Answer feedback: rated answers.", no_args_is_help=True)


@feedback_app.command("export")
def export_command(
    tenant: Annotated[str, typer.Argument(help="the tenant's slug")],
    out: Annotated[
        Path, typer.Option("--out", help="folder for the question set (created if missing)")
    ],
) -> None:
    """Write a tenant's rated answers as a question set for `cairn eval answers OUT`: thumbs-up
    answers become reference answers, thumbs-down ones questions to label."""
    settings = prepared(get_settings())
    summary = asyncio.run(_export(settings, tenant, out))
    typer.echo(
        f"{summary.questions} questions ({summary.judged} with a reference answer, "
        f"{summary.passages} passages) written to {out}"
        + (f"; {summary.skipped} withheld answers left out" if summary.skipped else "")
    )


async def _export(settings: Settings, tenant: str, out: Path) -> ExportSummary:
    from app.container import Container

    container = Container(settings)
    try:
        async with container.database.sessionmaker() as session, session.begin():
            return await export_feedback(session, tenant, out)
    finally:
        await container.close()
