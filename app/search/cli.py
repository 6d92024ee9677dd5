"""`cairn search "query" --tenant T`: ranked hits on the console (registered in app/cli.py)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.actor import SystemActor
from app.kit.console import prepared
from app.kit.errors import CairnError, NotPermitted, ResourceNotFound
from app.kit.principal import Principal
from app.kit.public_ids import IdKind, encode_id
from app.kit.settings import SearchSettings, Settings, get_settings
from app.search.schemas import SearchFilters, SearchMode, SearchRequest, SearchResponse
from app.search.visibility import Visibility

if TYPE_CHECKING:
    from app.container import Container

_SNIPPET_CHARS = 300


async def resolve_caller(
    session: AsyncSession,
    container: Container,
    *,
    tenant: str,
    as_user: str | None,
    permission: tuple[str, str],
    filters: SearchFilters | None = None,
) -> tuple[Principal | SystemActor, Visibility]:
    """Who a console command acts as in a tenant and what it may see: the operator (every
    sensitivity level, no actor) or a user, with that user's role and its permission check."""
    from app.kit.authz import domain_of
    from app.tenants.repository import tenant_repository
    from app.users.repository import user_repository

    found = await tenant_repository.get_by_slug(session, tenant)
    if found is None:
        raise ResourceNotFound(f"Tenant {tenant!r} not found")
    if as_user is None:
        return SystemActor.OPERATOR, Visibility.for_tenant(found.id, filters=filters)
    user = await user_repository.get_by_username(session, as_user.lower())
    if user is None or not user.is_active:
        raise ResourceNotFound(f"User {as_user!r} not found")
    enforcer = container.enforcer
    await enforcer.refresh(session)
    if not enforcer.allowed(user.id, domain_of(found.id), *permission):
        raise NotPermitted(f"{as_user} may not {permission[0]} in {tenant}")
    actor = Principal(user.id, user.username, user.is_platform_admin)
    levels = enforcer.sensitivity_levels(user.id, found.id)
    return actor, Visibility.for_tenant(found.id, levels, filters)


async def run_search(
    settings: Settings, request: SearchRequest, *, tenant: str, as_user: str | None
) -> tuple[SearchResponse, SearchMode]:
    """Search a tenant as the operator (every sensitivity) or with a user's role in it; the
    hits and the mode they were ranked in (the knowledge base's when the request gave none)."""
    from app.container import Container
    from app.knowledge_base.service import knowledge_base_service
    from app.search.service import search_service

    container = Container(settings)
    database = container.database
    try:
        async with database.read_sessionmaker() as session:
            actor, visibility = await resolve_caller(
                session,
                container,
                tenant=tenant,
                as_user=as_user,
                permission=("search", "query"),
                filters=request.filters,
            )
            defaults = await knowledge_base_service.retrieval(
                session, visibility.tenant_id, settings
            )
            top_k, mode = request.top_k or defaults.top_k, request.mode or defaults.mode
            response = await search_service.search(
                visibility,
                query=request.query,
                top_k=top_k,
                mode=mode,
                retriever=container.retriever,
                defaults=defaults,
            )
        if settings.search.audit:
            async with database.sessionmaker() as session, session.begin():
                await search_service.audit(
                    session,
                    actor=actor,
                    visibility=visibility,
                    mode=mode,
                    top_k=top_k,
                    response=response,
                )
        return response, mode
    finally:
        await container.close()


def score_kind(mode: str, search: SearchSettings) -> tuple[str, str]:
    """(tag, legend) of the scores a search in `mode` returns. A fused hybrid score is
    relative to the query's own candidates: z-score fusion gives 0 to an average candidate
    (and to a lone one), so the tag and legend say what the number is, and rank comes first."""
    if search.rerank.backend != "none":
        return "rerank", "rerank = the cross-encoder's score"
    if mode == "bm25":
        return "bm25", "bm25 = BM25 score"
    if mode == "vector":
        return "cos", "cos = cosine similarity to the query"
    if search.fusion == "zscore":
        return "z", (
            "z = BM25 and vector z-scores fused, relative to this query's candidates "
            "(0 = an average or lone candidate)"
        )
    if search.fusion == "rrf":
        return "rrf", "rrf = reciprocal rank fusion of BM25 and vector"
    return "w", "w = weighted min-max fusion of BM25 and vector"


def _score(tag: str, value: float) -> str:
    # Signed where the scale is centred on 0; 4 significant digits, never a rounded-away 0.
    text = f"{value:+.3f}" if tag == "z" else f"{value:.4g}"
    return f"{tag} {text}"


def format_hits(response: SearchResponse, *, kind: tuple[str, str] | None = None) -> str:
    """Ranked hits as readable lines: rank, score (tagged with its kind), title › headings,
    public ids, then a snippet; the last line counts the hits and explains the score."""
    tag, legend = kind or ("score", "")
    lines: list[str] = []
    for rank, hit in enumerate(response.hits, start=1):
        where = " › ".join([hit.title, *hit.heading_path])
        lines.append(
            f"{rank:>3}. {_score(tag, hit.score)}  {where}  "
            f"[{encode_id(IdKind.DOCUMENT, hit.document_id)}, "
            f"{encode_id(IdKind.CHUNK, hit.chunk_id)}]"
        )
        snippet = " ".join(hit.text.split())
        if len(snippet) > _SNIPPET_CHARS:
            snippet = snippet[: _SNIPPET_CHARS - 1] + "…"
        lines.append(f"     {snippet}")
    count = f"{len(response.hits)} hit{'' if len(response.hits) == 1 else 's'}"
    footer = f"{count} in {response.took_ms:.1f} ms"
    lines.append(f"{footer} ({legend})" if legend and response.hits else footer)
    return "\n".join(lines)


def search_command(
    query: Annotated[str, typer.Argument(help="what to search for")],
    tenant: Annotated[str, typer.Option(help="tenant slug")],
    mode: Annotated[
        str | None,
        typer.Option(help="hybrid | bm25 | vector (default: the knowledge base's setting)"),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", help="number of hits, 1-100 (default: the knowledge base's)"),
    ] = None,
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as-user", help="search with this user's role (default: operator, all levels)"
        ),
    ] = None,
    tags: Annotated[str | None, typer.Option(help="comma-separated; any of them")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
) -> None:
    """Search a tenant and print the ranked hits."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        request = SearchRequest.model_validate(
            {
                "query": query,
                "top_k": top_k,
                "mode": mode,
                "filters": {"tags": tags.split(",")} if tags else None,
            }
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        typer.echo(f"error: {where}: {error['msg']}", err=True)
        raise typer.Exit(code=2) from exc
    settings = prepared(get_settings())
    try:
        response, used_mode = asyncio.run(
            run_search(settings, request, tenant=tenant, as_user=as_user)
        )
    except CairnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from exc
    if as_json:
        typer.echo(json.dumps(response.model_dump(), ensure_ascii=False, indent=2))
    else:
        typer.echo(format_hits(response, kind=score_kind(used_mode, settings.search)))
