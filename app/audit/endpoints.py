from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from app.audit.chain import tenant_chain
from app.audit.checkpoints import CheckpointLog
from app.audit.export import MEDIA_TYPES, ExportFormat, encode
from app.audit.schemas import (
    AuditEntryRead,
    AuditExportRow,
    AuditQueryParams,
    CheckpointRead,
    PublicKeyRead,
    VerifyRead,
)
from app.audit.service import audit_service
from app.kit.auth import AppSettings, CurrentPrincipal
from app.kit.authz import Authorizer, CurrentEnforcer, TenantAccess
from app.kit.db import AppDatabase, ReadSession, Session
from app.kit.pagination import Page, Pagination
from app.models.base import utcnow

router = APIRouter(tags=["audit"])

AuditRead = Annotated[TenantAccess, Depends(Authorizer("audit", "read"))]
AuditVerifyTenant = Annotated[TenantAccess, Depends(Authorizer("audit", "verify"))]


def _checkpoint_log(settings: AppSettings) -> CheckpointLog:
    return CheckpointLog(settings)


Checkpoints = Annotated[CheckpointLog, Depends(_checkpoint_log)]


@router.get("/api/v1/tenants/{tenant}/audit", response_model=Page[AuditEntryRead])
async def list_audit(
    access: AuditRead, session: ReadSession, page: Pagination, query: AuditQueryParams
) -> Page[AuditEntryRead]:
    """The tenant's entries, newest first; people the reader may not see are not named."""
    entries, total = await audit_service.list_for_tenant(
        session, access, query, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[AuditEntryRead.of(e) for e in entries],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/api/v1/tenants/{tenant}/audit/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
async def export_audit(
    access: AuditRead,
    session: Session,
    database: AppDatabase,
    query: AuditQueryParams,
    format: Annotated[ExportFormat, Query(description="csv or jsonl")] = "csv",
) -> StreamingResponse:
    """Every entry of the tenant's log that matches the filters, oldest first, as CSV or JSON
    Lines (streamed); the export itself is audited."""
    shown = await audit_service.export(session, database, access, query, fmt=format)
    rows = (AuditExportRow.of(e) async for e in shown)
    name = f"audit-{access.tenant.slug}-{utcnow():%Y%m%dT%H%M%SZ}.{format}"
    return StreamingResponse(
        encode(rows, format),
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/api/v1/tenants/{tenant}/audit/verify", response_model=VerifyRead)
async def verify_tenant_audit(
    access: AuditVerifyTenant, session: ReadSession, checkpoints: Checkpoints
) -> VerifyRead:
    report = await audit_service.verify(
        session, [tenant_chain(access.tenant_id)], checkpoints=checkpoints
    )
    return VerifyRead.of(report)


@router.get("/api/v1/audit/verify", response_model=VerifyRead)
async def verify_audit(
    principal: CurrentPrincipal,
    session: ReadSession,
    enforcer: CurrentEnforcer,
    checkpoints: Checkpoints,
) -> VerifyRead:
    """Verify every chain the caller may verify: each tenant where it holds audit verification,
    plus the platform chain for platform admins. Other tenants' chains are not touched, so not
    even their entry counts leak. `cairn audit verify` checks all chains with direct DB access."""
    chains = await audit_service.verifiable_chains(session, principal, enforcer)
    report = await audit_service.verify(session, chains, checkpoints=checkpoints)
    return VerifyRead.of(report)


@router.get("/api/v1/tenants/{tenant}/audit/checkpoints", response_model=Page[CheckpointRead])
async def list_tenant_checkpoints(
    access: AuditVerifyTenant, checkpoints: Checkpoints, page: Pagination
) -> Page[CheckpointRead]:
    """The tenant chain's signed checkpoints, oldest first."""
    items, total = await audit_service.list_checkpoints(
        checkpoints, [tenant_chain(access.tenant_id)], limit=page.limit, offset=page.offset
    )
    return Page(
        items=[CheckpointRead.of(c) for c in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/api/v1/audit/checkpoints", response_model=Page[CheckpointRead])
async def list_checkpoints(
    principal: CurrentPrincipal,
    session: ReadSession,
    enforcer: CurrentEnforcer,
    checkpoints: Checkpoints,
    page: Pagination,
    chain: Annotated[
        str | None, Query(max_length=64, description='"global" or "tenant:<tenant id>"')
    ] = None,
) -> Page[CheckpointRead]:
    """Signed checkpoints of the chains the caller may verify (as for /audit/verify), oldest
    first."""
    chains = await audit_service.verifiable_chains(session, principal, enforcer)
    items, total = await audit_service.list_checkpoints(
        checkpoints, chains, chain=chain, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[CheckpointRead.of(c) for c in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/api/v1/audit/public-key", response_model=PublicKeyRead)
async def audit_public_key(_principal: CurrentPrincipal, checkpoints: Checkpoints) -> PublicKeyRead:
    """The Ed25519 public key checkpoints are signed with, for checking them offline."""
    key_id, pem = await audit_service.public_key(checkpoints)
    return PublicKeyRead(key_id=key_id, public_key_pem=pem)
