"""A document's chunks: read, edit, disable/enable, add (SPEC.md "Curation")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.container import container_of
from app.documents.chunk_schemas import ChunkCreate, ChunkRead, ChunkUpdate
from app.documents.curation import curation_service
from app.jobs.runtime import Runtime
from app.kit.authz import Authorizer, TenantAccess
from app.kit.db import ReadSession, Session
from app.kit.pagination import Page, Pagination
from app.kit.public_ids import ChunkRef, DocumentRef

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}/documents/{document_id}/chunks", tags=["documents"]
)

DocumentsRead = Annotated[TenantAccess, Depends(Authorizer("documents", "read"))]
DocumentsWrite = Annotated[TenantAccess, Depends(Authorizer("documents", "write"))]


def _runtime(request: Request) -> Runtime:
    return container_of(request)


CurrentRuntime = Annotated[Runtime, Depends(_runtime)]


@router.get("", response_model=Page[ChunkRead])
async def list_chunks(
    document_id: DocumentRef,
    access: DocumentsRead,
    session: ReadSession,
    page: Pagination,
    runtime: CurrentRuntime,
) -> Page[ChunkRead]:
    """The document's chunks in order, with whether each is enabled and who wrote it."""
    return await curation_service.list_chunks(session, access, document_id, page, runtime)


@router.patch("/{chunk_id}", response_model=ChunkRead)
async def update_chunk(
    document_id: DocumentRef,
    chunk_id: ChunkRef,
    data: ChunkUpdate,
    access: DocumentsWrite,
    session: Session,
    runtime: CurrentRuntime,
) -> ChunkRead:
    """New text (re-embedded, re-indexed) or enabled on/off: in force when this returns."""
    return await curation_service.update_chunk(
        session, access, document_id, chunk_id, data, runtime
    )


@router.post("", status_code=201, response_model=ChunkRead)
async def add_chunk(
    document_id: DocumentRef,
    data: ChunkCreate,
    access: DocumentsWrite,
    session: Session,
    runtime: CurrentRuntime,
) -> ChunkRead:
    """A chunk written by hand, searchable when this returns."""
    return await curation_service.add_chunk(session, access, document_id, data, runtime)
