"""Password login: throttle, verify, audit (success and failure), start a sign-in session and
issue a JWT naming it; signing out and ending every session of a person."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.auth.repository import auth_session_repository
from app.kit.actor import SystemActor, UserActor
from app.kit.errors import BadRequest, NotAuthenticated, RateLimited
from app.kit.principal import Principal
from app.kit.ratelimit import LoginThrottle
from app.kit.security import create_access_token, verify_password
from app.kit.settings import Settings
from app.models import User
from app.models.base import utcnow
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
        kind: str = "api",
    ) -> str:
        """A JWT for valid credentials; 401 otherwise (the failure is audited and committed).
        `kind` names where the session lives: "api" (a bearer token) or "web" (a cookie).

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
                actor=UserActor(user.id, user.username) if user else SystemActor.SIGN_IN,
                outcome="failure",
                details={"reason": "unknown user" if user is None else "bad credentials"},
            )
            await session.commit()
            raise NotAuthenticated("Incorrect username or password")
        await audit_service.record(
            session, action="auth.login", actor=UserActor(user.id, user.username)
        )
        return await self.issue_token(session, settings, user, kind=kind)

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
                actor=UserActor(user.id, user.username) if user else SystemActor.SIGN_IN,
                outcome="failure",
                details={"reason": "throttled", "limits": [str(scope) for scope in refused.scopes]},
            )
            await session.commit()
        raise RateLimited(
            "Too many failed sign-in attempts; try again later",
            headers={"Retry-After": str(refused.retry_after)},
        )

    async def issue_token(
        self, session: AsyncSession, settings: Settings, user: User, *, kind: str
    ) -> str:
        """Start a sign-in session for the user and return an access token naming it."""
        now = utcnow()
        ttl = timedelta(minutes=settings.jwt_ttl_minutes)
        await auth_session_repository.prune(session, now=now)
        started = await auth_session_repository.start(
            session, user_id=user.id, kind=kind, expires_at=now + ttl
        )
        return create_access_token(
            user.subject,
            started.handle,
            secret=settings.secret("jwt_secret"),
            algorithm=settings.jwt_algorithm,
            ttl=ttl,
            now=now,
            version=user.token_version,
        )

    async def signout(self, session: AsyncSession, principal: Principal) -> None:
        """End the caller's sign-in session on the server: the token or cookie that carried
        this request gets 401 from now on, in every process. API keys have no session."""
        if principal.session_id is None:
            raise BadRequest(
                "An API key has no session to sign out of; revoke it with "
                "DELETE /api/v1/api-keys/{id}",
                code="not_a_session",
            )
        await auth_session_repository.end(
            session, principal.session_id, reason="signout", now=utcnow()
        )
        await audit_service.record(session, action="auth.signout", actor=principal)

    async def end_sessions(self, session: AsyncSession, user_id: int, *, reason: str) -> int:
        """End every sign-in session of a person (password change or reset, deactivation);
        how many were live."""
        return await auth_session_repository.end_all(session, user_id, reason=reason, now=utcnow())


auth_service = AuthService()
