"""Users: creation, lookup, the first platform admin, password change and reset."""

from __future__ import annotations

import asyncio
import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.repository import api_key_repository
from app.audit.service import audit_service
from app.auth.service import auth_service
from app.kit import authz
from app.kit.actor import SystemActor, UserActor
from app.kit.errors import Conflict, NotAuthenticated, NotPermitted, ResourceNotFound
from app.kit.principal import Principal
from app.kit.ratelimit import LoginThrottle
from app.kit.security import hash_password, verify_password
from app.kit.settings import InsecureConfiguration, Settings
from app.models import User
from app.models.base import utcnow
from app.users.passwords import PasswordPolicy, WeakPassword
from app.users.repository import user_repository
from app.users.schemas import MembershipRead, PasswordChange, UserCreate

INITIAL_ADMIN_USERNAME = "admin"


class UserService:
    async def create(
        self,
        session: AsyncSession,
        actor: Principal | SystemActor,
        data: UserCreate,
        *,
        policy: PasswordPolicy,
    ) -> User:
        """Create a user (platform admins only, or the CLI as the operator)."""
        policy.check(data.password, username=data.username, email=data.email)
        if await user_repository.get_by_username(session, data.username) is not None:
            raise Conflict("A user with this username already exists")
        user = user_repository.add(
            session,
            User(
                username=data.username,
                email=data.email,
                password_hash=await asyncio.to_thread(hash_password, data.password),
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
        self, session: AsyncSession, password: str | None, *, policy: PasswordPolicy
    ) -> tuple[str, str] | None:
        """On an empty database, create the first platform admin; returns (username, password).

        A configured password (CAIRN_ADMIN_PASSWORD) that breaks the policy stops the start-up
        with InsecureConfiguration rather than creating an admin anyone could guess.
        """
        if await user_repository.count(session) > 0:
            return None
        chosen = password or secrets.token_urlsafe(max(15, policy.min_length))
        try:
            policy.check(chosen, username=INITIAL_ADMIN_USERNAME)
        except WeakPassword as exc:
            raise InsecureConfiguration(f"CAIRN_ADMIN_PASSWORD is refused: {exc.message}") from exc
        user = await self.create(
            session,
            SystemActor.OPERATOR,
            UserCreate(username=INITIAL_ADMIN_USERNAME, password=chosen, is_platform_admin=True),
            policy=policy,
        )
        return user.username, chosen

    async def change_password(
        self,
        session: AsyncSession,
        principal: Principal,
        data: PasswordChange,
        *,
        settings: Settings,
        throttle: LoginThrottle,
        address: str | None,
    ) -> str:
        """Change the caller's own password; returns a fresh access token.

        Needs the current password, checked under the sign-in throttle (a wrong one counts as a
        failed sign-in). Every sign-in session ends (and token_version is bumped), so every
        token and cookie issued before stops working at once, including the caller's; the
        caller's API keys are kept (they are managed on their own and a person changing a
        password is not a sign that they leaked), unlike a reset.
        """
        user = await user_repository.get(session, principal.user_id)
        if user is None:
            raise NotAuthenticated("Invalid or expired token")
        await auth_service.refuse_if_throttled(
            session,
            throttle,
            username=user.username,
            address=address,
            user=user,
            action="user.password_change",
        )
        policy = PasswordPolicy.from_settings(settings)
        policy.check(data.new_password, username=user.username, email=user.email)
        if not await asyncio.to_thread(verify_password, user.password_hash, data.current_password):
            await throttle.failed(username=user.username, address=address)
            await audit_service.record(
                session,
                action="user.password_change",
                actor=principal,
                target_type="user",
                target_id=user.id,
                outcome="failure",
                details={"reason": "bad credentials"},
            )
            await session.commit()
            raise NotPermitted("The current password is incorrect", code="wrong_password")
        await user_repository.set_password(
            session, user.id, await asyncio.to_thread(hash_password, data.new_password)
        )
        ended = await auth_service.end_sessions(session, user.id, reason="password_changed")
        await audit_service.record(
            session,
            action="user.password_change",
            actor=principal,
            target_type="user",
            target_id=user.id,
            details={"sessions_ended": ended},
        )
        await session.refresh(user)
        return await auth_service.issue_token(session, settings, user, kind="api")

    async def reset_password(
        self,
        session: AsyncSession,
        principal: Principal,
        username: str,
        new_password: str,
        *,
        policy: PasswordPolicy,
    ) -> None:
        """Set a user's password (platform admin); revokes their access tokens and API keys.

        A reset is what follows a suspected compromise, so every credential the user held
        stops working: sign-in sessions end, API keys are revoked.
        """
        user = await user_repository.get_by_username(session, username.lower())
        if user is None:
            raise ResourceNotFound("User not found")
        policy.check(new_password, username=user.username, email=user.email)
        await user_repository.set_password(
            session, user.id, await asyncio.to_thread(hash_password, new_password)
        )
        revoked = await api_key_repository.revoke_all_owned(session, user.id, now=utcnow())
        ended = await auth_service.end_sessions(session, user.id, reason="password_reset")
        await audit_service.record(
            session,
            action="user.password_reset",
            actor=principal,
            target_type="user",
            target_id=user.id,
            details={"api_keys_revoked": revoked, "sessions_ended": ended},
        )

    async def set_active(
        self, session: AsyncSession, principal: Principal, username: str, *, active: bool
    ) -> User:
        """Disable or re-enable an account (platform admin). A disabled user's tokens and API
        keys are refused on their next request (credentials check is_active every time)."""
        user = await user_repository.get_by_username(session, username.lower())
        if user is None:
            raise ResourceNotFound("User not found")
        if user.id == principal.user_id and not active:
            raise Conflict("You cannot disable your own account", code="self_disable")
        if user.is_active != active:
            user.is_active = active
            # Re-enabling an account must not revive the tokens it held when disabled.
            ended = (
                0
                if active
                else await auth_service.end_sessions(session, user.id, reason="deactivated")
            )
            await audit_service.record(
                session,
                action="user.enable" if active else "user.disable",
                actor=principal,
                target_type="user",
                target_id=user.id,
                details={} if active else {"sessions_ended": ended},
            )
            await session.flush()
        return user

    def actor(self, user: User) -> UserActor:
        """The audit actor for a user."""
        return UserActor(user.id, user.username)


user_service = UserService()
