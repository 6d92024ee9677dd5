"""Casbin RBAC with domains, behind one module. Endpoints see only the typed dependencies.

The Casbin model is configs/rbac_model.conf. Role permissions (p rules) come from
configs/rbac_policy.csv and are synced into the casbin_rule table; role assignments (g rules)
are written by the membership service inside the same transaction as the membership row. Every
policy write bumps `authz_revision`; each process compares that counter on every request and
reloads its enforcer when it moved, so a membership change takes effect on the next request in
every worker process.
"""

from __future__ import annotations

import asyncio
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from casbin_async_sqlalchemy_adapter import Adapter
from fastapi import Depends, Request
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.kit.actor import SystemActor, UserActor
from app.kit.auth import CurrentPrincipal
from app.kit.authz_matcher import CachedMatcherEnforcer
from app.kit.db import ReadSession
from app.kit.errors import NotPermitted, ResourceNotFound
from app.kit.principal import Principal
from app.kit.settings import CONFIG_DIR
from app.models import AuthzRevision, CasbinRule, Membership, Tenant

MODEL_PATH = CONFIG_DIR / "rbac_model.conf"
POLICY_PATH = CONFIG_DIR / "rbac_policy.csv"

PLATFORM_DOMAIN = "platform"
PLATFORM_ADMIN = "platform_admin"
TENANT_ROLES = ("admin", "editor", "viewer", "restricted_viewer", "guest", "auditor")
SENSITIVITY_LEVELS = ("public", "internal", "confidential")


def domain_of(tenant_id: int) -> str:
    """The Casbin domain for a tenant."""
    return f"tenant:{tenant_id}"


def subject_of(user_id: int) -> str:
    """The Casbin subject for a user."""
    return f"user:{user_id}"


def read_policy_file(path: Path = POLICY_PATH) -> list[tuple[str, str, str, str]]:
    """The role permissions listed in the policy CSV."""
    rules: list[tuple[str, str, str, str]] = []
    with path.open(newline="") as handle:
        for row in csv.reader(handle, skipinitialspace=True):
            if not row or row[0].startswith("#"):
                continue
            if row[0] != "p" or len(row) != 5:
                raise ValueError(f"unexpected policy line in {path}: {row}")
            rules.append((row[1], row[2], row[3], row[4]))
    return rules


async def _bump_revision(session: AsyncSession) -> None:
    await session.execute(
        update(AuthzRevision)
        .where(AuthzRevision.id == 1)
        .values(revision=AuthzRevision.revision + 1)
    )


async def sync_role_permissions(session: AsyncSession) -> bool:
    """Make the p rules in the database equal the policy file; returns whether anything changed."""
    wanted = set(read_policy_file())
    rows = (await session.execute(select(CasbinRule).where(CasbinRule.ptype == "p"))).scalars()
    current = {(r.v0 or "", r.v1 or "", r.v2 or "", r.v3 or "") for r in rows}
    if current == wanted:
        return False
    await session.execute(delete(CasbinRule).where(CasbinRule.ptype == "p"))
    adapter = Adapter(session.bind, db_class=CasbinRule, db_session=session)
    await adapter.add_policies("p", "p", [list(rule) for rule in sorted(wanted)])
    await _bump_revision(session)
    return True


async def assign_role(session: AsyncSession, *, user_id: int, domain: str, role: str) -> None:
    """Give the user exactly this role in the domain (replacing any other), in this transaction."""
    adapter = Adapter(session.bind, db_class=CasbinRule, db_session=session)
    await adapter.remove_filtered_policy("g", "g", 0, subject_of(user_id), "", domain)
    await adapter.add_policy("g", "g", [subject_of(user_id), role, domain])
    await _bump_revision(session)


async def revoke_roles(session: AsyncSession, *, user_id: int, domain: str | None = None) -> None:
    """Remove the user's roles in one domain, or everywhere when domain is None."""
    adapter = Adapter(session.bind, db_class=CasbinRule, db_session=session)
    await adapter.remove_filtered_policy("g", "g", 0, subject_of(user_id), "", domain or "")
    await _bump_revision(session)


async def revoke_domain(session: AsyncSession, domain: str) -> None:
    """Remove every role held in the domain (its tenant is being deleted)."""
    await session.execute(
        delete(CasbinRule).where(CasbinRule.ptype == "g", CasbinRule.v2 == domain)
    )
    await _bump_revision(session)


class Enforcer:
    """A per-process Casbin enforcer that reloads when the policy revision moves."""

    def __init__(self, engine: AsyncEngine) -> None:
        # The adapter given here is replaced by a session-bound one on every reload.
        self._enforcer = CachedMatcherEnforcer(
            str(MODEL_PATH), Adapter(engine, db_class=CasbinRule)
        )
        self._revision: int | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, session: AsyncSession) -> None:
        """Reload the policy if another process (or this one) changed it since the last load."""
        revision = await session.scalar(select(AuthzRevision.revision).where(AuthzRevision.id == 1))
        if revision == self._revision:
            return
        async with self._lock:
            if revision != self._revision:
                # Load through the caller's session: on SQLite a second connection could wait
                # on a lock that this very request holds.
                self._enforcer.set_adapter(
                    Adapter(session.bind, db_class=CasbinRule, db_session=session)
                )
                await self._enforcer.load_policy()
                self._revision = revision

    def allowed(self, user_id: int, domain: str, obj: str, act: str) -> bool:
        """Whether the user may do `act` on `obj` in the domain."""
        return bool(self._enforcer.enforce(subject_of(user_id), domain, obj, act))

    def sensitivity_levels(self, user_id: int, tenant_id: int) -> tuple[str, ...]:
        """The document sensitivity levels the user may see in the tenant."""
        domain = domain_of(tenant_id)
        return tuple(
            level
            for level in SENSITIVITY_LEVELS
            if self.allowed(user_id, domain, "sensitivity", level)
        )


async def _enforcer(request: Request, session: ReadSession) -> Enforcer:
    enforcer: Enforcer = request.app.state.container.enforcer
    await enforcer.refresh(session)
    return enforcer


CurrentEnforcer = Annotated[Enforcer, Depends(_enforcer)]


@dataclass(frozen=True)
class TenantAccess:
    """A principal acting inside one tenant, after the tenant was found and the check passed."""

    principal: Principal
    tenant: Tenant
    role: str | None
    sensitivity: tuple[str, ...]
    enforcer: Enforcer

    @property
    def tenant_id(self) -> int:
        return self.tenant.id

    @property
    def actor(self) -> UserActor:
        return self.principal.actor

    def can(self, obj: str, act: str) -> bool:
        """Whether the principal may also do `act` on `obj` in this tenant."""
        return self.enforcer.allowed(self.principal.user_id, domain_of(self.tenant.id), obj, act)


@dataclass(frozen=True)
class SystemAccess:
    """The server's own work inside one tenant (a bulk import, a benchmark's load): no person
    and no role; it sees every sensitivity level, and whoever builds it has decided it may."""

    tenant: Tenant
    actor: SystemActor
    sensitivity: tuple[str, ...] = SENSITIVITY_LEVELS

    @property
    def tenant_id(self) -> int:
        return self.tenant.id


async def _visible_tenant(
    session: AsyncSession, principal: Principal, slug: str
) -> tuple[Tenant, str | None]:
    """The tenant and the caller's role in it; 404 unless a member (or a platform admin)."""
    row = (
        await session.execute(
            select(Tenant, Membership.role)
            .outerjoin(
                Membership,
                (Membership.tenant_id == Tenant.id) & (Membership.user_id == principal.user_id),
            )
            .where(Tenant.slug == slug)
        )
    ).first()
    if row is None or (row[1] is None and not principal.is_platform_admin):
        # A tenant you have no role in answers exactly like one that does not exist.
        raise ResourceNotFound("Tenant not found")
    return row[0], row[1]


async def tenant_access(
    session: AsyncSession,
    principal: Principal,
    enforcer: Enforcer,
    *,
    slug: str,
    obj: str,
    act: str,
) -> TenantAccess:
    """The principal's access to the tenant `slug` for `act` on `obj`: 404 unless the tenant is
    visible to them, then 403 unless the check passes, so a 403 never confirms a tenant exists.
    `Authorizer` does this for a `tenant` path parameter; call it where the tenant is named
    elsewhere (an OpenAI model name)."""
    found, role = await _visible_tenant(session, principal, slug)
    if not enforcer.allowed(principal.user_id, domain_of(found.id), obj, act):
        raise NotPermitted()
    return TenantAccess(
        principal=principal,
        tenant=found,
        role=role,
        sensitivity=enforcer.sensitivity_levels(principal.user_id, found.id),
        enforcer=enforcer,
    )


class Authorizer:
    """Dependency: resolve the `tenant` path parameter (404 if not visible), then check (403)."""

    def __init__(self, obj: str, act: str) -> None:
        self.obj = obj
        self.act = act

    async def __call__(
        self,
        tenant: str,
        principal: CurrentPrincipal,
        session: ReadSession,
        enforcer: CurrentEnforcer,
    ) -> TenantAccess:
        return await tenant_access(
            session, principal, enforcer, slug=tenant, obj=self.obj, act=self.act
        )


class PlatformAuthorizer:
    """Dependency: a check in the platform domain (creating tenants and users, verifying audit)."""

    def __init__(self, obj: str, act: str) -> None:
        self.obj = obj
        self.act = act

    async def __call__(self, principal: CurrentPrincipal, enforcer: CurrentEnforcer) -> Principal:
        if not enforcer.allowed(principal.user_id, PLATFORM_DOMAIN, self.obj, self.act):
            raise NotPermitted()
        return principal
