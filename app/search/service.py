"""Search: embed the query, retrieve within the caller's visibility, audit who saw what."""

from __future__ import annotations

import time
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.kit.actor import SystemActor
from app.kit.principal import Principal
from app.knowledge_base.schemas import RetrievalSettings
from app.search.dedupe import Candidate
from app.search.retriever import Retriever, SearchQuery
from app.search.schemas import SearchHit, SearchMode, SearchResponse
from app.search.visibility import Visibility


class SearchService:
    async def search(
        self,
        visibility: Visibility,
        *,
        query: str,
        top_k: int,
        mode: SearchMode,
        retriever: Retriever,
        defaults: RetrievalSettings | None = None,
    ) -> SearchResponse:
        """Ranked hits of one tenant that the visibility admits; took_ms covers embedding too.
        `defaults`, a knowledge base's retrieval settings, give the fusion weights, and the
        score threshold when the search runs in their mode (scores of another mode are on
        another scale)."""
        started = time.perf_counter()
        vector = (
            await retriever.embed_query(query, tenant_id=visibility.tenant_id)
            if mode != "bm25"
            else None
        )
        query_options = SearchQuery(text=query, mode=mode, top_k=top_k, vector=vector)
        if defaults is not None:
            query_options = replace(
                query_options,
                weights=(defaults.weights.bm25, defaults.weights.vector),
                min_score=defaults.min_score if mode == defaults.mode else None,
            )
        hits = await retriever.retrieve(visibility, query_options)
        took_ms = round((time.perf_counter() - started) * 1000, 3)
        return SearchResponse(hits=[_hit(h) for h in hits], took_ms=took_ms)

    async def search_audited(
        self,
        session: AsyncSession,
        *,
        actor: Principal | SystemActor,
        visibility: Visibility,
        query: str,
        top_k: int,
        mode: SearchMode,
        retriever: Retriever,
        defaults: RetrievalSettings | None = None,
    ) -> SearchResponse:
        """A caller's search, audited when search auditing is on (the API and the web page)."""
        response = await self.search(
            visibility,
            query=query,
            top_k=top_k,
            mode=mode,
            retriever=retriever,
            defaults=defaults,
        )
        if retriever.settings.audit:
            await self.audit(
                session,
                actor=actor,
                visibility=visibility,
                mode=mode,
                top_k=top_k,
                response=response,
            )
        return response

    async def audit(
        self,
        session: AsyncSession,
        *,
        actor: Principal | SystemActor,
        visibility: Visibility,
        mode: SearchMode,
        top_k: int,
        response: SearchResponse,
    ) -> None:
        """Record that the actor searched and which documents it was shown.

        Never the query text: only the mode, sizes and the ids of the documents returned.
        """
        await audit_service.record(
            session,
            action="search.query",
            actor=actor,
            tenant_id=visibility.tenant_id,
            target_type="search",
            details={
                "mode": mode,
                "top_k": top_k,
                "filtered": visibility.filtered,
                "hit_count": len(response.hits),
                "document_ids": sorted({h.document_id for h in response.hits}),
            },
        )


def _hit(hit: Candidate) -> SearchHit:
    return SearchHit(
        chunk_id=hit.chunk_id,
        document_id=hit.document_id,
        title=hit.title,
        text=hit.text,
        score=hit.score,
        heading_path=list(hit.heading_path),
        sensitivity=hit.sensitivity,
    )


search_service = SearchService()
