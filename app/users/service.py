"""Users: creation, lookup, the first platform admin."""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, audit_service
from app.kit import authz
from app.kit.errors import Conflict
from app.kit.principal import Principal
from app.kit.security import hash_password
from app.models import User
from app.users.repository import user_repository
from app.users.schemas import MembershipRead, UserCreate

INITIAL_ADMIN_USERNAME = "admin"


class UserService:
    async def create(
        self, session: AsyncSession, actor: Principal | None, data: UserCreate
    ) -> User:
        """Create a user (platform admins only, or the CLI when actor is None)."""
        if await user_repository.get_by_username(session, data.username) is not None:
            raise Conflict("A user with this username already exists")
        user = user_repository.add(
            session,
            User(
                username=data.username,
                email=data.email,
                password_hash=hash_password(data.password),
                is_platform_admin=data.is_platform_admin,
            ),
        )
        await session.flush()
        if data.is_platform_admin:
            await authz.assign_role(
                session, user_id=user.id, domain=authz.PLATFORM_DOMAIN, role=authz.PLATFORM_ADMIN
            )
        await audit_service.record(
            session,
            action="user.create",
            actor=actor,
            target_type="user",
            target_id=user.id,
            details={"platform_admin": data.is_platform_admin},
        )
        return user

    async def memberships(self, session: AsyncSession, user_id: int) -> list[MembershipRead]:
        """The tenants the user belongs to, with the role in each."""
        return [
            MembershipRead(tenant=tenant.slug, tenant_name=tenant.name, role=role)
            for tenant, role in await user_repository.memberships(session, user_id)
        ]

    async def ensure_initial_admin(
        self, session: AsyncSession, password: str | None
    ) -> tuple[str, str] | None:
        """On an empty database, create the first platform admin; returns (username, password)."""
        if await user_repository.count(session) > 0:
            return None
        chosen = password or secrets.token_urlsafe(15)
        user = await self.create(
            session,
            None,
            UserCreate(username=INITIAL_ADMIN_USERNAME, password=chosen, is_platform_admin=True),
        )
        return user.username, chosen

    def actor(self, user: User) -> Actor:
        """The audit actor for a user."""
        return Actor(user.id, user.username)


user_service = UserService()
