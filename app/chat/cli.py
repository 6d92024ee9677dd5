"""`cairn ask "question" --tenant T`: a grounded answer once checked, headed by what it is
(app/chat/states.py), then its citations (registered in app/cli.py). For operators checking
the generator and the corpus."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer

from app.chat.answers import (
    Answer,
    Answered,
    AnswerRuntime,
    Caller,
    Progress,
    Question,
    answer_service,
)
from app.chat.citations import Citation
from app.chat.states import state_label
from app.kit.console import prepared
from app.kit.errors import CairnError
from app.kit.public_ids import IdKind, encode_id
from app.kit.settings import Settings, get_settings


async def run_ask(
    settings: Settings, question: str, *, tenant: str, as_user: str | None, top_k: int | None
) -> Answer:
    """Answer as the operator (every sensitivity) or with a user's role, printing the answer
    once checked, headed by its state; audited like an answer through the API."""
    from app.container import Container
    from app.search.cli import resolve_caller

    container = Container(settings)
    database = container.database
    try:
        # More passages than allowed are capped here rather than refused.
        asked = Question(question, top_k=min(top_k, settings.chat.max_top_k) if top_k else None)
        async with database.read_sessionmaker() as session:
            actor, visibility = await resolve_caller(
                session, container, tenant=tenant, as_user=as_user, permission=("chat", "ask")
            )
            runtime = AnswerRuntime(settings, container.retriever, container.generator, database)
            prepared = await answer_service.prepare(
                session, Caller(actor, visibility, via="cli"), question=asked, runtime=runtime
            )
        answered: Answered | None = None
        live = sys.stderr.isatty()
        async with answer_service.stream(prepared) as items:
            async for item in items:
                if isinstance(item, Answered):
                    answered = item
                elif isinstance(item, Progress) and live:
                    # The model's words are shown only once checked (as in the web page): a
                    # terminal is told meanwhile how far it has got.
                    typer.echo(f"\r… {item.stage} ({item.tokens} tokens)", nl=False, err=True)
        if answered is None:
            raise RuntimeError("the answer stream ended without its answer")
        if live:
            typer.echo("\r\033[K", nl=False, err=True)
        answer = answered.answer
        typer.echo(f"[{state_label(answer.state, answered.language)}]")
        typer.echo(answer.text)
        if answer.note:
            typer.echo(answer.note)
        return answer
    finally:
        await container.close()


def format_citations(citations: list[Citation]) -> str:
    if not citations:
        return "(no citations)"
    return "\n".join(
        f"[{c.ref}] {c.title}  [{encode_id(IdKind.DOCUMENT, c.document_id)}, "
        f"{encode_id(IdKind.CHUNK, c.chunk_id)}]\n    " + (f"“{c.quote}”" if c.quote else c.snippet)
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
            run_ask(prepared(get_settings()), question, tenant=tenant, as_user=as_user, top_k=top_k)
        )
    except CairnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(format_citations(answer.citations))
