"""`cairn ask "question" --tenant T`: a grounded answer streamed to the console, then its
citations (registered in app/cli.py). For operators checking the generator and the corpus."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Annotated

import typer

from app.chat.citations import Citation
from app.chat.service import Answer, chat_service
from app.kit.errors import CairnError
from app.kit.settings import Settings, get_settings


async def run_ask(
    settings: Settings, question: str, *, tenant: str, as_user: str | None, top_k: int | None
) -> Answer:
    """Answer as the operator (every sensitivity) or with a user's role, printing the text
    as it is generated; audited like an answer through the API."""
    from app.generation.limits import limits_from_settings
    from app.generation.provider import GeneratorProvider
    from app.kit.db import database_for
    from app.search.cli import resolve_caller
    from app.search.retriever import Retriever

    database = database_for(settings)
    try:
        async with database.read_sessionmaker() as session:
            actor, visibility = await resolve_caller(
                session, database, tenant=tenant, as_user=as_user, permission=("chat", "ask")
            )
            grounding = await chat_service.ground(
                visibility,
                Retriever.create(database, settings),
                settings.chat,
                question=question,
                top_k=min(top_k or settings.chat.top_k, settings.chat.max_top_k),
            )
        generator = await GeneratorProvider(settings).get() if grounding.relevant else None
        parts: list[str] = []
        deltas = chat_service.stream(grounding, generator, limits_from_settings(settings.generator))
        async with contextlib.aclosing(deltas) as produced:
            async for delta in produced:
                parts.append(delta)
                typer.echo(delta, nl=False)
        typer.echo("")
        answer = chat_service.finish(grounding, "".join(parts), settings.chat)
        if settings.chat.audit:
            async with database.sessionmaker() as session, session.begin():
                await chat_service.audit(
                    session,
                    actor=actor,
                    visibility=visibility,
                    grounding=grounding,
                    answer=answer,
                    via="cli",
                )
        return answer
    finally:
        await database.dispose()


def format_citations(citations: list[Citation]) -> str:
    if not citations:
        return "(no citations)"
    return "\n".join(
        f"[{c.ref}] {c.title}  [document {c.document_id}, chunk {c.chunk_id}]\n    {c.snippet}"
        for c in citations
    )


def ask_command(
    question: Annotated[str, typer.Argument(help="the question")],
    tenant: Annotated[str, typer.Option(help="tenant slug")],
    as_user: Annotated[
        str | None,
        typer.Option("--as-user", help="answer with this user's role (default: operator)"),
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="passages in the prompt")] = None,
) -> None:
    """Answer a question from a tenant's documents, with citations."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    question = question.strip()
    if not question:
        typer.echo("error: the question is empty", err=True)
        raise typer.Exit(code=2)
    try:
        answer = asyncio.run(
            run_ask(get_settings(), question, tenant=tenant, as_user=as_user, top_k=top_k)
        )
    except CairnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(format_citations(answer.citations))
