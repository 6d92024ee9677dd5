"""The web pages of curation: a knowledge base's settings (chunking, retrieval, keyword-index
stemmer with its rebuild's progress, re-parse) and a document's chunks (edit, disable, add).
Both are thin: their script uses the API."""

from __future__ import annotations

from typing import get_args

from fastapi import APIRouter, Request, Response

from app.container import container_of
from app.kit.authz import CurrentEnforcer
from app.kit.db import ReadSession
from app.kit.public_ids import IdKind, encode_id
from app.kit.settings import ChunkTemplate
from app.knowledge_base.service import knowledge_base_service
from app.search.index.tokenize import STEMMERS
from app.web.routes import SignedIn, _in_tenant, document_in_page

router = APIRouter(include_in_schema=False)

TEMPLATES = get_args(ChunkTemplate)


@router.get("/t/{tenant}/settings")
async def settings_page(
    tenant: str,
    request: Request,
    page: SignedIn,
    session: ReadSession,
    enforcer: CurrentEnforcer,
) -> Response:
    await _in_tenant(page, session, enforcer, tenant, "settings", "read")
    assert page.access is not None
    settings = container_of(request).settings
    current = await knowledge_base_service.effective(session, page.access.tenant_id, settings)
    return page.render(
        "settings.html",
        section="settings",
        kb=current,
        templates=TEMPLATES,
        stemmers=STEMMERS,
    )


@router.get("/t/{tenant}/documents/{document_id}/chunks")
async def chunks_page(
    tenant: str,
    document_id: str,
    page: SignedIn,
    session: ReadSession,
    enforcer: CurrentEnforcer,
) -> Response:
    document = await document_in_page(page, session, enforcer, tenant, document_id)
    return page.render(
        "chunks.html",
        section="documents",
        doc=document,
        doc_id=encode_id(IdKind.DOCUMENT, document.id),
        curatable=document.status == "ready" and document.deleted_at is None,
    )
