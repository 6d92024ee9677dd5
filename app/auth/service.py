"""Password login: throttle, verify, audit (success and failure), issue a JWT."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, audit_service
from app.kit.errors import NotAuthenticated, RateLimited
from app.kit.ratelimit import LoginThrottle
from app.kit.security import create_access_token, verify_password
from app.kit.settings import Settings
from app.models import User
from app.users.repository import user_repository


class AuthService:
    async def login(
        self,
        session: AsyncSession,
        settings: Settings,
        throttle: LoginThrottle,
        *,
        username: str,
        password: str,
        address: str | None,
    ) -> str:
        """A JWT for valid credentials; 401 otherwise (the failure is audited and committed).

        The throttle is consulted before the password is hashed: a refused attempt costs no
        argon2 and, past the first refusal in a window, no audit entry.
        """
        name = username.strip().lower()
        user = await user_repository.get_by_username(session, name)
        await self.refuse_if_throttled(
            session, throttle, username=name, address=address, user=user, action="auth.login"
        )
        valid = await asyncio.to_thread(
            verify_password, user.password_hash if user else None, password
        )
        if user is None or not valid or not user.is_active:
            await throttle.failed(username=name, address=address)
            # The attempted username is not logged: people type passwords into that field.
            await audit_service.record(
                session,
                action="auth.login",
                actor=Actor(user.id, user.username) if user else None,
                outcome="failure",
                details={"reason": "unknown user" if user is None else "bad credentials"},
            )
            await session.commit()
            raise NotAuthenticated("Incorrect username or password")
        await audit_service.record(
            session, action="auth.login", actor=Actor(user.id, user.username)
        )
        return self.issue_token(settings, user.id, version=user.token_version)

    async def refuse_if_throttled(
        self,
        session: AsyncSession,
        throttle: LoginThrottle,
        *,
        username: str,
        address: str | None,
        user: User | None,
        action: str,
    ) -> None:
        """Raise RateLimited (429 + Retry-After) when the username or address is over its budget.

        Only the first refusal of a key in a window is audited (and committed, since the
        request's transaction rolls back with the error); later ones leave no trace, so
        refused attempts cannot grow the global audit chain without bound.
        """
        refused = await throttle.check(username=username, address=address)
        if refused is None:
            return
        if refused.first:
            await audit_service.record(
                session,
                action=action,
                actor=Actor(user.id, user.username) if user else None,
                outcome="failure",
                details={"reason": "throttled", "limits": [str(scope) for scope in refused.scopes]},
            )
            await session.commit()
        raise RateLimited(
            "Too many failed sign-in attempts; try again later",
            headers={"Retry-After": str(refused.retry_after)},
        )

    def issue_token(self, settings: Settings, user_id: int, *, version: int) -> str:
        """An access token for the user, valid while their token_version is `version`."""
        return create_access_token(
            user_id,
            secret=settings.secret("jwt_secret"),
            algorithm=settings.jwt_algorithm,
            ttl=timedelta(minutes=settings.jwt_ttl_minutes),
            version=version,
        )


auth_service = AuthService()
