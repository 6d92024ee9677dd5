from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from app.container import container_of
from app.kit.auth import CurrentPrincipal
from app.kit.authz import Authorizer, PlatformAuthorizer, TenantAccess
from app.kit.bounds import UsernamePath
from app.kit.db import ReadSession, Session
from app.kit.pagination import Page, Pagination
from app.kit.principal import Principal
from app.tenants import deletion
from app.tenants.repository import tenant_repository
from app.tenants.schemas import (
    MemberRead,
    MemberSet,
    TenantCounts,
    TenantCreate,
    TenantRead,
    TenantUpdate,
)
from app.tenants.service import tenant_service

router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])

TenantsCreate = Annotated[Principal, Depends(PlatformAuthorizer("tenants", "create"))]
TenantRead_ = Annotated[TenantAccess, Depends(Authorizer("tenants", "read"))]
TenantsUpdate = Annotated[TenantAccess, Depends(Authorizer("tenants", "update"))]
TenantsDelete = Annotated[TenantAccess, Depends(Authorizer("tenants", "delete"))]
MembersRead = Annotated[TenantAccess, Depends(Authorizer("members", "read"))]
MembersWrite = Annotated[TenantAccess, Depends(Authorizer("members", "write"))]


@router.post("", status_code=201, response_model=TenantRead)
async def create_tenant(
    data: TenantCreate, principal: TenantsCreate, session: Session
) -> TenantRead:
    """Create a tenant; the caller becomes its admin unless the body says `"join": false`."""
    tenant = await tenant_service.create(session, principal, data)
    # Only platform admins create tenants, and they see counts: a new tenant's are known.
    counts = TenantCounts(members=1 if data.join else 0, documents=0)
    return TenantRead.of(tenant, "admin" if data.join else None, counts)


@router.get("", response_model=Page[TenantRead])
async def list_tenants(
    principal: CurrentPrincipal, session: ReadSession, page: Pagination
) -> Page[TenantRead]:
    """A platform admin: every tenant's metadata (name, counts, created), never its content;
    anyone else: the tenants they hold a role in."""
    rows, total = await tenant_service.list_visible(
        session, principal, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[row.read() for row in rows], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{tenant}", response_model=TenantRead)
async def get_tenant(access: TenantRead_) -> TenantRead:
    return TenantRead.of(access.tenant, access.role)


@router.patch("/{tenant}", response_model=TenantRead)
async def update_tenant(data: TenantUpdate, access: TenantsUpdate, session: Session) -> TenantRead:
    """Rename the tenant or set its retention window (tenant admin, platform admin)."""
    tenant = await tenant_service.update(session, access.principal, access.tenant, data)
    return TenantRead.of(tenant, access.role)


@router.delete("/{tenant}", status_code=204)
async def delete_tenant(
    access: TenantsDelete,
    request: Request,
    shred: Annotated[
        bool, Query(description="destroy the tenant's data key first (crypto-shredding)")
    ] = False,
) -> Response:
    """Delete the tenant and everything in it (platform admin; audited). With `shred=true` its
    data key is destroyed first, so encrypted copies anywhere become unreadable."""
    container = container_of(request)
    await deletion.delete_tenant(
        container,
        access.principal,
        access.tenant.slug,
        shred=shred,
        shard_cache=container.retriever.cache,
    )
    return Response(status_code=204)


@router.get("/{tenant}/members", response_model=Page[MemberRead])
async def list_members(
    access: MembersRead, session: ReadSession, page: Pagination
) -> Page[MemberRead]:
    rows, total = await tenant_repository.list_members(
        session, access.tenant_id, limit=page.limit, offset=page.offset
    )
    items = [MemberRead(username=u.username, role=m.role, since=m.created_at) for u, m in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.put("/{tenant}/members/{username}", response_model=MemberRead)
async def set_member(
    username: UsernamePath, data: MemberSet, access: MembersWrite, session: Session
) -> MemberRead:
    membership = await tenant_service.set_member(
        session, tenant=access.tenant, username=username, role=data.role, actor=access.principal
    )
    return MemberRead(username=username.lower(), role=membership.role, since=membership.created_at)


@router.delete("/{tenant}/members/{username}", status_code=204)
async def remove_member(username: UsernamePath, access: MembersWrite, session: Session) -> Response:
    await tenant_service.remove_member(
        session, tenant=access.tenant, username=username, actor=access.principal
    )
    return Response(status_code=204)
