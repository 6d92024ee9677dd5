from __future__ import annotations

from typing import Annotated, get_args

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from app.container import container_of
from app.documents.purge import purge_service
from app.documents.schemas import (
    DocumentAccepted,
    DocumentRead,
    DocumentStatus,
    DocumentUpdate,
    Sensitivity,
    clean_tags,
)
from app.documents.service import document_service
from app.kit.auth import AppSettings
from app.kit.authz import Authorizer, TenantAccess
from app.kit.db import ReadSession, Session
from app.kit.errors import ResourceNotFound, ValidationFailed
from app.kit.headers import attachment
from app.kit.pagination import Page, Pagination
from app.kit.public_ids import DocumentRef, IdKind, encode_id
from app.kit.ratelimit import CallerQuotas
from app.kit.storage import ContentStore

router = APIRouter(prefix="/api/v1/tenants/{tenant}/documents", tags=["documents"])

DocumentsRead = Annotated[TenantAccess, Depends(Authorizer("documents", "read"))]
DocumentsWrite = Annotated[TenantAccess, Depends(Authorizer("documents", "write"))]


def _store(request: Request) -> ContentStore:
    return container_of(request).store


Store = Annotated[ContentStore, Depends(_store)]


@router.post("", status_code=202, response_model=DocumentAccepted)
async def upload_document(
    request: Request,
    access: DocumentsWrite,
    session: Session,
    settings: AppSettings,
    store: Store,
    background: BackgroundTasks,
    quotas: CallerQuotas,
    file: Annotated[UploadFile, File()],
    title: Annotated[str | None, Form(max_length=500)] = None,
    tags: Annotated[str | None, Form(max_length=4000, description="comma-separated")] = None,
    sensitivity: Annotated[Sensitivity, Form()] = "internal",
) -> DocumentAccepted:
    if (await request.form()).get("sensitivity") == "":
        # FastAPI reads an empty form field as an absent one: without this check an explicit
        # `sensitivity=` would silently become the default instead of being refused.
        raise ValidationFailed(f"sensitivity must be one of: {', '.join(get_args(Sensitivity))}")
    try:
        tag_list = clean_tags(tags.split(",")) if tags else []
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc
    # The form is parsed (the file spooled) by now: its size counts against the byte quota.
    await quotas.charge(access, "upload", size=file.size or 0)
    document, job = await document_service.upload(
        session,
        access,
        stream=file.file,
        filename=file.filename,
        title=title,
        tags=tag_list,
        sensitivity=sensitivity,
        store=store,
        max_bytes=settings.max_upload_bytes,
    )
    # Runs after the commit: a worker must never look for a job that is not visible yet.
    background.add_task(container_of(request).dispatcher.enqueue, job.id)
    return DocumentAccepted(id=document.id, status="queued")


@router.get("", response_model=Page[DocumentRead])
async def list_documents(
    access: DocumentsRead,
    session: ReadSession,
    page: Pagination,
    status: Annotated[DocumentStatus | None, Query()] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    sensitivity: Annotated[Sensitivity | None, Query()] = None,
    title: Annotated[
        str | None, Query(max_length=200, description="substring of the title, any case")
    ] = None,
) -> Page[DocumentRead]:
    documents, total = await document_service.list_visible(
        session,
        access,
        status=status,
        tag=tag,
        limit=page.limit,
        offset=page.offset,
        sensitivity=sensitivity,
        title=title,
    )
    items = await document_service.read_models(session, documents)
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/{document_id}", response_model=DocumentRead)
async def get_document(
    document_id: DocumentRef, access: DocumentsRead, session: ReadSession
) -> DocumentRead:
    document = await document_service.get(session, access, document_id)
    if document is None:
        raise ResourceNotFound("Document not found")
    return (await document_service.read_models(session, [document]))[0]


@router.patch("/{document_id}", response_model=DocumentRead)
async def update_document(
    document_id: DocumentRef, data: DocumentUpdate, access: DocumentsWrite, session: Session
) -> DocumentRead:
    document = await document_service.update(session, access, document_id, data)
    return (await document_service.read_models(session, [document]))[0]


@router.delete("/{document_id}", status_code=202, response_model=DocumentAccepted)
async def delete_document(
    request: Request,
    document_id: DocumentRef,
    access: DocumentsWrite,
    session: Session,
    background: BackgroundTasks,
    purge: Annotated[
        bool,
        Query(
            description="hard delete now (tenant admin): every store, verified, with a "
            "deletion receipt; without it, a soft delete restorable for the retention window"
        ),
    ] = False,
) -> DocumentAccepted:
    if not purge:
        await document_service.soft_delete(session, access, document_id)
        return DocumentAccepted(id=document_id, status="deleted")
    requested = await purge_service.request(
        session, access, tenant_id=access.tenant_id, document_id=document_id
    )
    if requested.job is not None:
        # After the commit, like every dispatch.
        background.add_task(container_of(request).dispatcher.enqueue, requested.job.id)
    return DocumentAccepted(id=document_id, status="purging", receipt_id=requested.receipt.id)


@router.get(
    "/{document_id}/file",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"}},
)
async def download_document(
    document_id: DocumentRef, access: DocumentsRead, session: Session, store: Store
) -> Response:
    """The original file as uploaded (decrypted when sealed at rest); audited. Visible to the
    same callers as the document; deleted and purging documents are not found."""
    document, data = await document_service.original(session, access, document_id, store=store)
    name = document.filename or f"document-{encode_id(IdKind.DOCUMENT, document.id)}"
    return Response(
        content=data,
        media_type=document.media_type,
        headers={
            "Content-Disposition": attachment(name),
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.put("/{document_id}/file", status_code=202, response_model=DocumentAccepted)
async def replace_document_file(
    request: Request,
    document_id: DocumentRef,
    access: DocumentsWrite,
    session: Session,
    settings: AppSettings,
    store: Store,
    background: BackgroundTasks,
    quotas: CallerQuotas,
    file: Annotated[UploadFile, File()],
) -> DocumentAccepted:
    """Replace a ready or failed document's file (same limits as an upload). The document
    keeps its id, title, tags and sensitivity and is processed again; the old version is
    erased everywhere first, with the deletion receipt `receipt_id`. 409 while the document
    is queued, processing, deleted or being purged."""
    await quotas.charge(access, "upload", size=file.size or 0)
    document, job, receipt = await document_service.replace(
        session,
        access,
        document_id,
        stream=file.file,
        filename=file.filename,
        store=store,
        max_bytes=settings.max_upload_bytes,
    )
    # After the commit, like every dispatch.
    background.add_task(container_of(request).dispatcher.enqueue, job.id)
    return DocumentAccepted(id=document.id, status="queued", receipt_id=receipt.id)


@router.post("/{document_id}/restore", response_model=DocumentRead)
async def restore_document(
    document_id: DocumentRef, access: DocumentsWrite, session: Session
) -> DocumentRead:
    document = await document_service.restore(session, access, document_id)
    return (await document_service.read_models(session, [document]))[0]


@router.post("/{document_id}/retry", status_code=202, response_model=DocumentAccepted)
async def retry_document(
    request: Request,
    document_id: DocumentRef,
    access: DocumentsWrite,
    session: Session,
    background: BackgroundTasks,
) -> DocumentAccepted:
    """Queue a failed document's ingestion again (409 unless it failed, and 409
    `not_retryable` when the failure lies in the file itself: replace the file instead)."""
    document, job = await document_service.retry(session, access, document_id)
    # After the commit, like every dispatch.
    background.add_task(container_of(request).dispatcher.enqueue, job.id)
    return DocumentAccepted(id=document.id, status="queued")
