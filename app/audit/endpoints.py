from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.audit.chain import GLOBAL_CHAIN, tenant_chain
from app.audit.repository import AuditFilter
from app.audit.schemas import AuditEntryRead, VerifyRead
from app.audit.service import audit_service
from app.kit import authz
from app.kit.auth import CurrentPrincipal
from app.kit.authz import Authorizer, CurrentEnforcer, TenantAccess
from app.kit.bounds import BoundedDatetime
from app.kit.db import ReadSession
from app.kit.pagination import Page, Pagination
from app.tenants.repository import tenant_repository
from app.users.repository import user_repository

router = APIRouter(tags=["audit"])

AuditRead = Annotated[TenantAccess, Depends(Authorizer("audit", "read"))]
AuditVerifyTenant = Annotated[TenantAccess, Depends(Authorizer("audit", "verify"))]


@router.get("/api/v1/tenants/{tenant}/audit", response_model=Page[AuditEntryRead])
async def list_audit(
    access: AuditRead,
    session: ReadSession,
    page: Pagination,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=64, description="username")] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    # A time without a zone is read as UTC; one outside app.kit.bounds' range is refused.
    since: Annotated[BoundedDatetime | None, Query()] = None,
    until: Annotated[BoundedDatetime | None, Query()] = None,
) -> Page[AuditEntryRead]:
    actor_id: int | None = None
    if actor:
        user = await user_repository.get_by_username(session, actor.lower())
        actor_id = user.id if user else -1  # an unknown actor matches nothing
    flt = AuditFilter(
        action=action,
        actor_id=actor_id,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
    )
    entries, total = await audit_service.list_for_tenant(
        session, access.tenant_id, flt, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[AuditEntryRead.of(e) for e in entries],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/api/v1/tenants/{tenant}/audit/verify", response_model=VerifyRead)
async def verify_tenant_audit(access: AuditVerifyTenant, session: ReadSession) -> VerifyRead:
    report = await audit_service.verify(session, [tenant_chain(access.tenant_id)])
    return VerifyRead.of(report)


@router.get("/api/v1/audit/verify", response_model=VerifyRead)
async def verify_audit(
    principal: CurrentPrincipal, session: ReadSession, enforcer: CurrentEnforcer
) -> VerifyRead:
    """Verify every chain the caller may verify: each tenant where it holds audit verification,
    plus the platform chain for platform admins. Other tenants' chains are not touched, so not
    even their entry counts leak. `cairn audit verify` checks all chains with direct DB access."""
    chains: list[str] = []
    if enforcer.allowed(principal.user_id, authz.PLATFORM_DOMAIN, "audit", "verify"):
        chains.append(GLOBAL_CHAIN)
    rows, _ = await tenant_repository.list_readable(session, principal, limit=10_000, offset=0)
    for tenant, _role in rows:
        if enforcer.allowed(principal.user_id, authz.domain_of(tenant.id), "audit", "verify"):
            chains.append(tenant_chain(tenant.id))
    report = await audit_service.verify(session, chains)
    return VerifyRead.of(report)
