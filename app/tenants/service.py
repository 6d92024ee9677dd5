"""Tenants (departments) and their memberships."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import DetailValue, audit_service
from app.cache import versions
from app.kit import authz
from app.kit.actor import SystemActor
from app.kit.errors import Conflict, ResourceNotFound
from app.kit.principal import Principal
from app.models import Membership, Tenant, User
from app.models.base import utcnow
from app.tenants.repository import tenant_repository
from app.tenants.schemas import TenantCounts, TenantCreate, TenantRow, TenantUpdate
from app.users.repository import user_repository


class TenantService:
    async def create(
        self,
        session: AsyncSession,
        actor: Principal | SystemActor,
        data: TenantCreate,
        *,
        admin_username: str | None = None,
    ) -> Tenant:
        """Create a tenant, start its audit chain and give it its first admin.

        The first admin is `admin_username` when named (the CLI, which has no caller), else the
        creating caller unless `data.join` is false. The admin is looked up before anything is
        written, so an unknown name creates no tenant. The grant goes the same way as PUT
        .../members/{username} (membership, Casbin role, `member.set` in the new tenant's
        chain), so nothing tells a creator's role from one given afterwards.
        """
        admin: User | None = None
        if admin_username is not None:
            admin = await user_repository.get_by_username(session, admin_username.lower())
            if admin is None or not admin.is_active:
                raise ResourceNotFound("User not found")
        elif data.join and isinstance(actor, Principal):
            admin = await user_repository.get(session, actor.user_id)
            if admin is None or not admin.is_active:
                raise ResourceNotFound("User not found")
        if await tenant_repository.get_by_slug(session, data.slug) is not None:
            raise Conflict("A tenant with this slug already exists")
        tenant = tenant_repository.add(
            session, Tenant(slug=data.slug, name=data.name, retention_days=data.retention_days)
        )
        await session.flush()
        await audit_service.create_chain(session, tenant.id)
        details: dict[str, DetailValue] = {"admin": "named" if admin_username else "creator"}
        if admin is None:
            details = {"admin": "none"}
        await audit_service.record(
            session,
            action="tenant.create",
            actor=actor,
            target_type="tenant",
            target_id=tenant.id,
            details=details,
        )
        await audit_service.record(
            session,
            action="tenant.create",
            actor=actor,
            tenant_id=tenant.id,
            target_type="tenant",
            target_id=tenant.id,
            details=details,
        )
        if admin is not None:
            await self._grant(
                session, tenant=tenant, user=admin, role="admin", actor=actor, membership=None
            )
        return tenant

    async def list_visible(
        self, session: AsyncSession, principal: Principal, *, limit: int, offset: int
    ) -> tuple[list[TenantRow], int]:
        """The tenants the principal may list: every tenant for a platform admin (metadata and
        counts, never content), else the ones it holds a role in (counts where it is admin)."""
        rows: list[tuple[Tenant, str | None]]
        if principal.is_platform_admin:
            rows, total = await tenant_repository.list_all(
                session, principal, limit=limit, offset=offset
            )
        else:
            readable, total = await tenant_repository.list_readable(
                session, principal, limit=limit, offset=offset
            )
            rows = list(readable)
        counted = [t.id for t, role in rows if principal.is_platform_admin or role == "admin"]
        counts = await tenant_repository.counts(session, counted)
        return [
            TenantRow(
                tenant=t,
                role=role,
                counts=TenantCounts(*counts[t.id]) if t.id in counts else None,
            )
            for t, role in rows
        ], total

    async def update(
        self, session: AsyncSession, actor: Principal, tenant: Tenant, data: TenantUpdate
    ) -> Tenant:
        """Rename the tenant or change its retention window (audited)."""
        # Loaded again in this (writing) session: the caller's copy came from a read session.
        found = await tenant_repository.get(session, tenant.id)
        if found is None:
            raise ResourceNotFound("Tenant not found")
        tenant = found
        changed: list[str] = []
        if data.name is not None and data.name != tenant.name:
            tenant.name = data.name
            changed.append("name")
        if (
            "retention_days" in data.model_fields_set
            and data.retention_days != tenant.retention_days
        ):
            tenant.retention_days = data.retention_days
            changed.append("retention_days")
        await audit_service.record(
            session,
            action="tenant.update",
            actor=actor,
            tenant_id=tenant.id,
            target_type="tenant",
            target_id=tenant.id,
            details={"fields": changed, "retention_days": tenant.retention_days},
        )
        return tenant

    async def set_member(
        self,
        session: AsyncSession,
        *,
        tenant: Tenant,
        username: str,
        role: str,
        actor: Principal | SystemActor,
    ) -> Membership:
        """Give a user a role in the tenant (replacing any previous role).

        Which usernames exist: usernames are platform-wide identifiers, and whoever manages a
        tenant's members must be able to add an existing colleague by username, so this call
        necessarily tells them whether an active account has that username. It tells them
        nothing else: an unknown and a deactivated account get the same 404 with the same
        message, and no e-mail, other membership or other attribute is ever returned. Each
        failed lookup is audited in the tenant's chain (outcome "failure"; like every audit
        entry, without the name tried) and committed although the request fails, so probing
        shows in the tenant's audit log.
        """
        user = await user_repository.get_by_username(session, username.lower())
        if user is None or not user.is_active:
            await audit_service.record(
                session,
                action="member.set",
                actor=actor,
                tenant_id=tenant.id,
                target_type="user",
                outcome="failure",
                details={"reason": "no active user", "role": role},
            )
            await session.commit()
            raise ResourceNotFound("User not found")
        membership = await tenant_repository.membership(session, tenant.id, user.id)
        if membership is not None and membership.role == "admin" and role != "admin":
            await self._keep_an_admin(session, tenant, actor)
        return await self._grant(
            session, tenant=tenant, user=user, role=role, actor=actor, membership=membership
        )

    async def _grant(
        self,
        session: AsyncSession,
        *,
        tenant: Tenant,
        user: User,
        role: str,
        actor: Principal | SystemActor,
        membership: Membership | None,
    ) -> Membership:
        # The one path for a role in a tenant: membership row, Casbin role, audit entry and the
        # tenant's content version (cached answers were computed for the old membership).
        previous = membership.role if membership else None
        if membership is None:
            membership = tenant_repository.add_membership(
                session, Membership(tenant_id=tenant.id, user_id=user.id, role=role)
            )
        else:
            membership.role = role
            membership.updated_at = utcnow()
        await authz.assign_role(
            session, user_id=user.id, domain=authz.domain_of(tenant.id), role=role
        )
        await audit_service.record(
            session,
            action="member.set",
            actor=actor,
            tenant_id=tenant.id,
            target_type="user",
            target_id=user.id,
            details={"role": role, "previous_role": previous},
        )
        await session.flush()
        await versions.bump(session, tenant.id)
        return membership

    async def remove_member(
        self,
        session: AsyncSession,
        *,
        tenant: Tenant,
        username: str,
        actor: Principal | SystemActor,
    ) -> None:
        """Remove a user's role in the tenant."""
        user = await user_repository.get_by_username(session, username.lower())
        membership = (
            await tenant_repository.membership(session, tenant.id, user.id) if user else None
        )
        if user is None or membership is None:
            raise ResourceNotFound("Member not found")
        if membership.role == "admin":
            await self._keep_an_admin(session, tenant, actor)
        await tenant_repository.delete_membership(session, membership)
        await authz.revoke_roles(session, user_id=user.id, domain=authz.domain_of(tenant.id))
        await audit_service.record(
            session,
            action="member.remove",
            actor=actor,
            tenant_id=tenant.id,
            target_type="user",
            target_id=user.id,
            details={"previous_role": membership.role},
        )
        await versions.bump(session, tenant.id)

    async def _keep_an_admin(
        self, session: AsyncSession, tenant: Tenant, actor: Principal | SystemActor
    ) -> None:
        # A tenant admin may not remove the last admin (a platform admin or the CLI may):
        # otherwise nobody could manage the tenant's members any more.
        if isinstance(actor, SystemActor) or actor.is_platform_admin:
            return
        if await tenant_repository.count_role(session, tenant.id, "admin") <= 1:
            raise Conflict("A tenant must keep at least one admin")


tenant_service = TenantService()
