from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.container import container_of
from app.kit.auth import AppSettings
from app.kit.authz import Authorizer, TenantAccess
from app.kit.db import Session
from app.kit.ratelimit import CallerQuotas
from app.knowledge_base.service import knowledge_base_service
from app.search.retriever import Retriever
from app.search.schemas import SearchRequest, SearchResponse
from app.search.service import search_service
from app.search.visibility import Visibility

router = APIRouter(prefix="/api/v1/tenants/{tenant}/search", tags=["search"])

SearchAccess = Annotated[TenantAccess, Depends(Authorizer("search", "query"))]


def _retriever(request: Request) -> Retriever:
    return container_of(request).retriever


CurrentRetriever = Annotated[Retriever, Depends(_retriever)]


@router.post("", response_model=SearchResponse)
async def search(
    data: SearchRequest,
    access: SearchAccess,
    audit_session: Session,
    retriever: CurrentRetriever,
    quotas: CallerQuotas,
    settings: AppSettings,
) -> SearchResponse:
    """Ranked visible passages; top_k and mode default to the knowledge base's settings."""
    await quotas.charge(access, "search")
    visibility = Visibility.of(access, data.filters)
    defaults = await knowledge_base_service.retrieval(audit_session, access.tenant_id, settings)
    return await search_service.search_audited(
        audit_session,
        actor=access.principal,
        visibility=visibility,
        query=data.query,
        top_k=data.top_k or defaults.top_k,
        mode=data.mode or defaults.mode,
        retriever=retriever,
        defaults=defaults,
    )
