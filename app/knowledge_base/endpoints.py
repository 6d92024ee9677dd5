"""Knowledge-base settings and re-parse (SPEC.md "Curation"); tenant admins only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from pydantic import BaseModel

from app.container import container_of
from app.kit.auth import AppSettings
from app.kit.authz import Authorizer, TenantAccess
from app.kit.db import ReadSession, Session
from app.kit.public_ids import JobId, JobRef
from app.knowledge_base.schemas import (
    JobRead,
    KnowledgeBaseSettings,
    KnowledgeBaseSettingsUpdate,
    ReparseRequest,
)
from app.knowledge_base.service import knowledge_base_service

router = APIRouter(prefix="/api/v1/tenants/{tenant}", tags=["knowledge base"])

SettingsRead = Annotated[TenantAccess, Depends(Authorizer("settings", "read"))]
SettingsWrite = Annotated[TenantAccess, Depends(Authorizer("settings", "write"))]


class JobAccepted(BaseModel):
    job_id: JobId
    total: int


@router.get("/settings", response_model=KnowledgeBaseSettings)
async def get_settings(
    access: SettingsRead, session: ReadSession, settings: AppSettings
) -> KnowledgeBaseSettings:
    """The settings in force, and which keys this knowledge base set itself."""
    return await knowledge_base_service.effective(session, access.tenant_id, settings)


@router.patch("/settings", response_model=KnowledgeBaseSettings)
async def update_settings(
    request: Request,
    data: KnowledgeBaseSettingsUpdate,
    access: SettingsWrite,
    session: Session,
    settings: AppSettings,
    background: BackgroundTasks,
) -> KnowledgeBaseSettings:
    """Change chunking (for documents parsed from now on: re-parse to apply it to the others),
    retrieval defaults (for the next search) or the BM25 stemmer (new chunks at once; the
    existing keyword index is rebuilt in the background, job `rebuild_job_id`, while searches
    go on)."""
    updated, queued = await knowledge_base_service.update(session, access, data, settings)
    if queued is not None:
        background.add_task(container_of(request).dispatcher.enqueue, queued.id)
    return updated


@router.post("/documents/reparse", status_code=202, response_model=JobAccepted)
async def reparse_documents(
    request: Request,
    data: ReparseRequest,
    access: SettingsWrite,
    session: Session,
    background: BackgroundTasks,
) -> JobAccepted:
    """Re-chunk and re-embed ready documents with the current chunking, in the background;
    searches answer from each document's old chunks until its new ones are in."""
    job = await knowledge_base_service.request_reparse(session, access, data)
    background.add_task(container_of(request).dispatcher.enqueue, job.id)
    return JobAccepted(job_id=job.id, total=job.total)


@router.get("/jobs/{job_id}", response_model=JobRead)
async def get_job(job_id: JobRef, access: SettingsRead, session: ReadSession) -> JobRead:
    """A background job's status and progress (done of total)."""
    job = await knowledge_base_service.job(session, access, job_id)
    return JobRead(
        id=job.id,
        kind=job.kind,
        status=job.status,
        done=job.done,
        total=job.total,
        error=job.error if job.status == "failed" else None,
    )
