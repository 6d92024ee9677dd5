"""Password login: verify, audit (success and failure), issue a JWT."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, audit_service
from app.kit.errors import NotAuthenticated
from app.kit.security import create_access_token, verify_password
from app.kit.settings import Settings
from app.users.repository import user_repository


class AuthService:
    async def login(
        self, session: AsyncSession, settings: Settings, *, username: str, password: str
    ) -> str:
        """A JWT for valid credentials; 401 otherwise (the failure is audited and committed)."""
        user = await user_repository.get_by_username(session, username.strip().lower())
        valid = verify_password(user.password_hash if user else None, password)
        if user is None or not valid or not user.is_active:
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
        return create_access_token(
            user.id,
            secret=settings.secret("jwt_secret"),
            algorithm=settings.jwt_algorithm,
            ttl=timedelta(minutes=settings.jwt_ttl_minutes),
        )


auth_service = AuthService()
